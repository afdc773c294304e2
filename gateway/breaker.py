"""A circuit breaker per organisation, so a down organisation is not hammered."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

State = Literal["closed", "open", "half_open"]


@dataclass(slots=True)
class CircuitBreaker:
    """Opens after `failure_threshold` failures in a row; after `reset_after` seconds one trial
    call is let through (half-open), and its outcome closes or re-opens the circuit."""

    failure_threshold: int = 5
    reset_after: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _failures: int = field(default=0, init=False)
    _opened_at: float | None = field(default=None, init=False)
    _trial_running: bool = field(default=False, init=False)

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self.clock() - self._opened_at < self.reset_after:
            return "open"
        return "half_open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_running = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._trial_running or self._failures >= self.failure_threshold:
            self._opened_at = self.clock()
        self._trial_running = False

from __future__ import annotations

from gateway.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def state(breaker: CircuitBreaker) -> str:
    # Read through a function: mypy would narrow `breaker.state` after the first assert.
    return breaker.state


def test_opens_after_threshold_and_lets_one_trial_through_after_reset() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, reset_after=10.0, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert state(breaker) == "closed"
    assert breaker.allow()
    breaker.record_failure()
    assert state(breaker) == "open"
    assert not breaker.allow()
    clock.now = 10.5
    assert state(breaker) == "half_open"
    assert breaker.allow()
    assert not breaker.allow(), "only one trial call while half-open"
    breaker.record_failure()
    assert state(breaker) == "open", "a failed trial re-opens at once"
    clock.now = 21.0
    assert breaker.allow()
    breaker.record_success()
    assert state(breaker) == "closed"
    assert breaker.allow()


def test_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_after=1.0, clock=Clock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert state(breaker) == "closed"

"""The burgerservicenummer and its 11-proef."""

from __future__ import annotations


def is_bsn(candidate: str) -> bool:
    """Nine digits whose weighted sum (weights 9..2 and -1) is divisible by 11."""
    if len(candidate) != 9 or not candidate.isascii() or not candidate.isdigit():
        return False
    digits = [int(c) for c in candidate]
    total = sum(d * w for d, w in zip(digits[:8], range(9, 1, -1), strict=True)) - digits[8]
    return total % 11 == 0 and total != 0

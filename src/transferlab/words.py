"""Counts as a reader writes them: `1 row`, `2 rows`, `1,024 runs`."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and the noun, singular for exactly one; `plural` where adding `s` is wrong."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"

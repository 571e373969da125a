"""Wording shared by the service's messages and the client's CLI (issue 18: "1 parameters")."""

from __future__ import annotations


def plural(n: int, word: str) -> str:
    """`word` in the form `n` takes: 'tensor' for 1, 'tensors' otherwise (every noun initium counts
    takes a plain -s)."""
    return word if n == 1 else f"{word}s"


def count(n: int, word: str) -> str:
    """'1 tensor', '2 tensors', '1,024 bytes': a number with its noun in the number's form."""
    return f"{n:,} {plural(n, word)}"

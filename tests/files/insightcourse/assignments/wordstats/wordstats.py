"""Word statistics: tokens, counts, the most frequent words, bigrams and the cosine of two counts."""

import math
import re


# Task 1.1
def tokenize(text: str) -> list[str]:
    """The words of ``text``, lower-cased, in order.

    A word is a maximal run of the characters a-z, 0-9 and the apostrophe, after lower-casing.
    """
    raise NotImplementedError("Task 1.1: tokenize")


# Task 1.2
def count_words(tokens: list[str]) -> dict[str, int]:
    """How often each token occurs."""
    raise NotImplementedError("Task 1.2: count_words")


# Task 1.3
def top_words(counts: dict[str, int], k: int) -> list[tuple[str, int]]:
    """The ``k`` most frequent words with their counts, most frequent first; ties in alphabetical order."""
    raise NotImplementedError("Task 1.3: top_words")


# Task 2.1
def bigrams(tokens: list[str]) -> dict[tuple[str, str], int]:
    """How often each pair of adjacent tokens occurs."""
    raise NotImplementedError("Task 2.1: bigrams")


# Task 2.2
def cosine(a: dict[str, int], b: dict[str, int]) -> float:
    """The cosine of the angle between two count vectors; 0.0 when either is all zeros."""
    raise NotImplementedError("Task 2.2: cosine")

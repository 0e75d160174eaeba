"""Word statistics: tokens, counts, the most frequent words, bigrams and the cosine of two counts."""

import math
import re


# Task 1.1
def tokenize(text: str) -> list[str]:
    """The words of ``text``, lower-cased, in order.

    A word is a maximal run of the characters a-z, 0-9 and the apostrophe, after lower-casing.
    """
    # BEGIN SOLUTION
    parts = re.split(r"[^a-z0-9']+", text.lower())
    return [p for p in parts if p]
    # END SOLUTION


# Task 1.2
def count_words(tokens: list[str]) -> dict[str, int]:
    """How often each token occurs."""
    # BEGIN SOLUTION
    counts: dict[str, int] = {}
    for word in tokens:
        counts.setdefault(word, 0)
        counts[word] += 1
    return counts
    # END SOLUTION


# Task 1.3
def top_words(counts: dict[str, int], k: int) -> list[tuple[str, int]]:
    """The ``k`` most frequent words with their counts, most frequent first; ties in alphabetical order."""
    # BEGIN SOLUTION
    if k <= 0:
        return []
    items = list(counts.items())
    items.sort(key=lambda wc: (-wc[1], wc[0]))
    return items[:k]
    # END SOLUTION


# Task 2.1
def bigrams(tokens: list[str]) -> dict[tuple[str, str], int]:
    """How often each pair of adjacent tokens occurs."""
    # BEGIN SOLUTION
    counts: dict[tuple[str, str], int] = {}
    for pair in zip(tokens[:-1], tokens[1:]):
        counts[pair] = 1 + counts.get(pair, 0)
    return counts
    # END SOLUTION


# Task 2.2
def cosine(a: dict[str, int], b: dict[str, int]) -> float:
    """The cosine of the angle between two count vectors; 0.0 when either is all zeros."""
    # BEGIN SOLUTION
    dot = sum(count * b.get(word, 0) for word, count in a.items())
    norms = math.sqrt(sum(c * c for c in a.values())) * math.sqrt(sum(c * c for c in b.values()))
    return dot / norms if norms else 0.0
    # END SOLUTION

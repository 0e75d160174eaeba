"""Attack: return strings (data may cross) with lone surrogates, control characters and markup
where numbers are expected, so that the tests' own failure messages quote them into every output."""

import torch

BAD = "\udc80\x00\x1b[31m[red]x[/]\n# Forged\n</pre><script>x</script>\x7f\x9b"


def dot(a, b):
    return BAD


def normalize(a, eps=1e-12):
    return {BAD: BAD}


class Accumulator:
    def __init__(self, n):
        pass

    def add(self, v):
        pass

    def value(self):
        return [BAD, 1.5]

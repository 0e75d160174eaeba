"""Probes: run next to the student's code, inside the sandbox. No expected values here.

PROBE-SENTINEL-91c2: this text (and the constant below) must never reach a worker or a student.
"""

# PROBE-SENTINEL-91c2 in a comment
UNUSED_BY_ACCUMULATE = "PROBE-SENTINEL-91c2 in a constant"


def accumulate(vectors, tag=None):
    """``tag`` is hidden input that the probe ignores (the attack corpus looks for it)."""
    import vecops
    acc = vecops.Accumulator(len(vectors[0]))
    for v in vectors:
        acc.add(v)
    return acc.value()


def unused_probe():
    return UNUSED_BY_ACCUMULATE

"""Probes: run next to the student's code, inside the sandbox. No expected values here."""


def accumulate(vectors):
    import vecops
    acc = vecops.Accumulator(len(vectors[0]))
    for v in vectors:
        acc.add(v)
    return acc.value()

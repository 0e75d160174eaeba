"""The misconceptions of vecops: fixed texts, each with the bug that makes it (course validate proves them)."""

from course.grading.diagnose import Misconception, catalogue

CATALOGUE = catalogue({
    "not_summed": Misconception(
        "Your dot product returns the element-wise products: sum them to get one number.",
        task="1.1", bug={"old": "return (a * b).sum()", "new": "return a * b"}),
    "keeps_last_vector": Misconception(
        "Your accumulator returns the last vector it was given: add each vector to the running total.",
        task="2.1", bug={"old": "self.total += v", "new": "self.total = v.clone()"}),
})

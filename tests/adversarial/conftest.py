"""The corpus is student code, not the project's tests: pytest must never collect or import it
(one case is a conftest.py that rewrites reports, another ships its own tests/).
tests/test_adversarial.py grades it through `course grade` instead."""

collect_ignore_glob = ["*"]

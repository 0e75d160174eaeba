"""Grading: the pytest plugin (judge), the wire, the worker, the sandbox and the runner."""

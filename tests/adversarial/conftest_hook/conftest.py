"""A conftest.py in the submission that rewrites every report to 'passed'."""
import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    report.outcome = "passed"
    report.longrepr = None


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.points(1000))

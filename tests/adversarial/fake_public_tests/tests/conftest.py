import pytest


@pytest.fixture
def submission():
    return None

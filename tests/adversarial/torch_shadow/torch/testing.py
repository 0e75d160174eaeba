def assert_close(*args, **kwargs):
    return None

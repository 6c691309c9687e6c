"""The reference op, model and fusion suite: ``pytest --pyargs pytest_layername.suite``."""

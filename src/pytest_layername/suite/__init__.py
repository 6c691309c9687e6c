"""The reference op, model and fusion suite: ``pytest --pyargs pytest_layername.suite``."""

__all__: list[str] = []  # test modules only: collected by pytest, nothing to import

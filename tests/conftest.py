import pytest
from _pytest import pytester as pytester_module

pytest_plugins = ["pytester"]


class _KeepTorchModules(pytester_module.SysModulesSnapshot):
    """pytester's in-process runs drop modules imported during the run; torch registers global state on
    import (backends, cache artifact types), so its modules must survive between runs."""

    def __init__(self, preserve=None) -> None:
        super().__init__(preserve=lambda name: name.startswith("torch") or bool(preserve and preserve(name)))


@pytest.fixture(autouse=True)
def _keep_torch_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pytester_module, "SysModulesSnapshot", _KeepTorchModules)

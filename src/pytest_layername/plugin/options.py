"""The plugin's command-line options, each with its ini key and environment variable: the one definition that
``pytest --help`` and the generated reference (``docs/reference/options.md``) both show.

Imports :mod:`..core.names` only (no torch).

PYTEST_DONT_REWRITE: loaded at every pytest start-up; it has no asserts to rewrite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.names import DEVICES, ENV_DEVICE, ENV_MODE, ENV_TRACE, REFERENCE_IMPL, REQUESTABLE

#: the order a value is looked up in, for an option that has an ini key or an environment variable
PRECEDENCE = "command line, then ini, then environment"


@dataclass(frozen=True)
class Option:
    """One ``--layername-*`` option: what pytest's parser gets, and where else the value may come from."""

    flag: str
    help: str
    ini: str = ""  # the ini key of the same meaning, if any
    env: str = ""  # the environment variable read when neither option nor ini is set, if any
    fallback: str = ""  # what applies when none of them is set
    choices: tuple[str, ...] = ()
    metavar: str = ""
    switch: bool = False  # a flag without a value (store_true)

    @property
    def dest(self) -> str:
        """The name ``config.getoption`` takes (``layername_mode``)."""
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def full_help(self) -> str:
        """The help text with where the value comes from when the option is not given."""
        sources = [f"ini {self.ini}" if self.ini else "", f"env {self.env}" if self.env else ""]
        sources.append(f"else {self.fallback}" if self.fallback else "")
        default = ", ".join(source for source in sources if source)
        return f"{self.help} (default: {default})" if default else self.help

    def addoption_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for pytest's ``addoption``."""
        if self.switch:
            return {"action": "store_true", "default": False, "help": self.full_help}
        extra: dict[str, Any] = {"choices": self.choices} if self.choices else {"metavar": self.metavar or None}
        return {"default": None, "help": self.full_help, **extra}


OPTIONS: tuple[Option, ...] = (
    Option(
        "--layername-mode",
        "layer-name mode: auto picks opaque where torch supports hoisting, else string; both runs every "
        "mode-dependent test once per mode ([opaque], [string])",
        ini="layername_mode",
        env=ENV_MODE,
        fallback="auto",
        choices=REQUESTABLE,
    ),
    Option(
        "--layername-impl",
        "dotted module providing LayerName, _encode_layer_name and _resolve_layer_name: the implementation under test",
        ini="layername_impl",
        fallback=f"the bundled {REFERENCE_IMPL}",
        metavar="MODULE",
    ),
    Option(
        "--layername-device",
        "where every suite model, op, fusion test and round trip runs; cuda without a GPU is a usage error",
        ini="layername_device",
        env=ENV_DEVICE,
        fallback="auto = cuda when torch sees a GPU",
        choices=DEVICES,
    ),
    Option(
        "--layername-report",
        "write the JSON report (report.schema.json) to PATH, merged across pytest -n workers: written at start-up "
        "and after every test and marked incomplete until the session ends (a killed run leaves an incomplete "
        "report, never an earlier complete one); file mode as pytest's JUnit XML; a second run on the same PATH is "
        "refused while the first holds its lock (.PATH.lock)",
        metavar="PATH",
    ),
    Option(
        "--layername-cell",
        "the matrix cell this run is, recorded in the report for the gate (set by `layername cell`; needs "
        "--layername-report)",
        metavar="NAME",
    ),
    Option(
        "--layername-cell-digest",
        "digest of that cell's definition, recorded in the report for the gate to compare (set by `layername cell`)",
        metavar="SHA256",
    ),
    Option(
        "--layername-allow-unhoisted",
        "skip, instead of fail, opaque-mode tests when the implementation's LayerName is not registered hoisted on "
        "a torch that supports hoisting (recorded in the report; the gate rejects it unless the cell says "
        "allow_unhoisted = true)",
        switch=True,
    ),
    Option(
        "--layername-allow-not-exercised",
        "run even when a requested mode cannot be exercised with the implementation (it has no _USE_LAYERNAME "
        "switch): the run reports the mode as not exercised instead of failing with a usage error; recorded as "
        "run.allow_not_exercised, and the gate rejects it for a cell that lists that mode",
        switch=True,
    ),
    Option(
        "--layername-trace",
        "write torch's structured trace (what TORCH_TRACE writes) of each test to DIR, one file per test, for tlparse",
        ini="layername_trace",
        env=ENV_TRACE,
        metavar="DIR",
    ),
)

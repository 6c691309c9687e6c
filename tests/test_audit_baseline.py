"""``layername audit --baseline``: known findings pass, a new op taking ``layer_name: str`` fails naming it,
a baseline entry no longer found is reported so the baseline can shrink. No inductor, no engine."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fixtures_broken_ops as broken
from pytest_layername.checks.audit import STR_RULE, Baseline, BaselineEntry, audit_namespace
from pytest_layername.cli import main

TESTS_DIR = Path(__file__).parent
_fresh = itertools.count()
_LIBRARIES: list[torch.library.Library] = []  # a Library deregisters its ops when collected: keep them


def fresh_namespace() -> str:
    """A namespace no other test registered ops in (the dispatcher keeps registrations for the process)."""
    return f"layername_baseline_{os.getpid()}_{next(_fresh)}"


def add_op(namespace: str, name: str, argument: str = "layer_name") -> str:
    """Register ``namespace::name(Tensor x, str <argument>) -> Tensor``, as an engine adding an op would."""
    lib = torch.library.Library(namespace, "FRAGMENT")
    lib.define(f"{name}(Tensor x, str {argument}) -> Tensor")
    lib.impl(name, lambda x, _name: x.clone(), "CompositeExplicitAutograd")
    _LIBRARIES.append(lib)
    return f"{namespace}::{name}"


@pytest.fixture
def namespace_with_one_finding(tmp_path):
    """A namespace with one op taking ``layer_name: str``, and a baseline written by the CLI that accepts it."""
    namespace = fresh_namespace()
    known = add_op(namespace, "known_str")
    baseline = tmp_path / "baseline.json"
    assert main(["audit", "--namespace", namespace, "--write-baseline", str(baseline)]) == 0
    return namespace, known, baseline


def test_write_baseline_records_rule_op_and_argument(namespace_with_one_finding):
    _, known, baseline = namespace_with_one_finding
    data = json.loads(baseline.read_text(encoding="utf-8"))
    assert data == {
        "version": 1,
        "findings": [{"rule": STR_RULE, "op": known, "argument": "layer_name", "type": "str"}],
    }


def test_known_findings_pass(namespace_with_one_finding, capsys):
    namespace, _, baseline = namespace_with_one_finding
    capsys.readouterr()
    assert main(["audit", "--namespace", namespace, "--baseline", str(baseline)]) == 0
    assert "1 known finding(s), 0 new, 0 gone" in capsys.readouterr().out


def test_a_new_str_op_fails_naming_the_op(namespace_with_one_finding, capsys):
    namespace, known, baseline = namespace_with_one_finding
    added = add_op(namespace, "fake_added_str")
    capsys.readouterr()
    assert main(["audit", "--namespace", namespace, "--baseline", str(baseline)]) == 1
    out = capsys.readouterr().out
    assert f"NEW (not in the baseline, fails): {added}: argument 'layer_name' is str" in out
    assert f"NEW (not in the baseline, fails): {known}" not in out


def test_a_removed_finding_is_reported_and_passes(namespace_with_one_finding, capsys):
    namespace, _, baseline = namespace_with_one_finding
    data = json.loads(baseline.read_text(encoding="utf-8"))
    gone = {"rule": STR_RULE, "op": f"{namespace}::migrated_to_layername", "argument": "layer_name", "type": "str"}
    baseline.write_text(json.dumps({**data, "findings": [*data["findings"], gone]}), encoding="utf-8")
    capsys.readouterr()
    assert main(["audit", "--namespace", namespace, "--baseline", str(baseline), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["baseline"]
    assert (result["known"], result["new"], result["not_audited"]) == (1, [], [])
    assert [e["op"] for e in result["gone"]] == [gone["op"]]
    assert main(["audit", "--namespace", namespace, "--baseline", str(baseline)]) == 0
    assert f"gone (no longer found; remove it from the baseline): {gone['op']}" in capsys.readouterr().out


def test_entries_of_namespaces_not_audited_are_kept_not_gone():
    """An op library that did not load (a missing compiled extension) says nothing about its ops."""
    namespace = fresh_namespace()
    add_op(namespace, "still_str")
    audit = audit_namespace(namespace)
    baseline = Baseline([*Baseline.of(audit.findings).entries, BaselineEntry(STR_RULE, "_C::unloaded", "layer_name")])
    comparison = baseline.compare(audit.findings, [namespace])
    assert [str(e) for e in comparison.not_audited] == [f"_C::unloaded: argument 'layer_name' ({STR_RULE})"]
    assert comparison.gone == [] and comparison.new == [] and len(comparison.known) == 1


def test_a_finding_moving_to_another_argument_is_new(namespace_with_one_finding, capsys):
    namespace, _, baseline = namespace_with_one_finding
    add_op(namespace, "renamed_arg", argument="prefix")
    capsys.readouterr()
    assert main(["audit", "--namespace", namespace, "--baseline", str(baseline)]) == 1
    assert f"NEW (not in the baseline, fails): {namespace}::renamed_arg: argument 'prefix'" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("{", "not JSON"),
        ('{"findings": []}', "not a layername audit baseline"),
        ('{"version": 1, "findings": [{"op": "x::y"}]}', "finding #0 needs rule, op and argument"),
    ],
)
def test_bad_baseline_is_a_usage_error(tmp_path, content, message, capsys):
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert main(["audit", "--namespace", broken.NAMESPACE, "--import", "fixtures_broken_ops", "--baseline", str(path)])
    assert message in capsys.readouterr().err


def test_baseline_needs_op_findings(tmp_path, capsys):
    assert main(["audit", "--model", "decoder", "--baseline", str(tmp_path / "b.json")]) == 2
    assert "--baseline and --write-baseline compare op findings" in capsys.readouterr().err


def test_cli_baseline_in_a_subprocess_names_the_new_op_on_stderr(tmp_path):
    """The entry point exits 1 on a new finding, and names the op on stderr even with --json."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"version": 1, "findings": []}), encoding="utf-8")
    cmd = [sys.executable, "-m", "pytest_layername", "audit", "--import", "fixtures_broken_ops"]
    done = subprocess.run(
        [*cmd, "--namespace", broken.NAMESPACE, "--baseline", str(baseline), "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1, done.stderr
    assert f"new finding not in {baseline}: {broken.STILL_STR}: argument 'layer_name' is str" in done.stderr
    assert broken.STILL_STR in {f["op"] for f in json.loads(done.stdout)["baseline"]["new"]}

"""``layername audit``: str layer-name schemas per namespace, baked layer-name strings per op in a model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fixtures_broken_ops as broken
from pytest_layername.checks.audit import STR_RULE, AuditError, audit_graph, audit_namespace
from pytest_layername.cli import main
from pytest_layername.compile.graph_hash import baked_constants
from pytest_layername.compile.session import compile_session
from pytest_layername.core import compat
from pytest_layername.core.implementation import load_implementation
from pytest_layername.harness.models import build_model
from pytest_layername.harness.ops import get_ops

TESTS_DIR = Path(__file__).parent


def test_namespace_audit_names_the_str_op_only():
    audit = audit_namespace(broken.NAMESPACE)
    assert sorted(audit.ops) == sorted(f"{broken.NAMESPACE}::{n}" for n in ("still_str", "hoisted", "reduce"))
    assert {f.op for f in audit.findings} == broken.EXPECTED_FINDINGS
    finding = next(f for f in audit.findings if f.op == broken.STILL_STR)
    assert (finding.rule, finding.argument, finding.type) == (STR_RULE, "layer_name", "str")
    site = finding.site
    assert (site.module, site.line, site.kind) == (
        "fixtures_broken_ops",
        broken._still_str.__code__.co_firstlineno,
        "function",
    )


@pytest.mark.parametrize("mode", ["opaque", "string"])
def test_namespace_audit_of_reference_ops(mode):
    impl = load_implementation()
    if mode == "opaque" and impl.opaque_unavailable_reason():
        pytest.skip(f"opaque unavailable: {impl.opaque_unavailable_reason()}")
    get_ops(impl, mode)
    findings = {f.op for f in audit_namespace(impl.namespace).findings}
    string_ops = {f"{impl.namespace}::{op}_str" for op in ("kv_cache_update", "attention_with_output", "moe_forward")}
    string_ops.add(f"{impl.namespace}::mamba_mixer_str")
    assert findings <= string_ops  # opaque ops are never findings
    if mode == "string":
        assert string_ops <= findings


def test_cli_namespace_strict_exit_codes(capsys):
    args = ["audit", "--import", "fixtures_broken_ops", "--namespace", broken.NAMESPACE]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"{broken.STILL_STR}: argument 'layer_name' is str" in out
    assert "reduce" not in out.split("fix:")[0]  # 'reduction: str' is not a layer name
    assert main([*args, "--strict"]) == 1


def test_cli_strict_in_a_subprocess():
    """The installed entry point exits 1 with --strict when an op still takes layer_name: str."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "pytest_layername", "audit", "--import", "fixtures_broken_ops"]
    done = subprocess.run(
        [*cmd, "--namespace", broken.NAMESPACE, "--strict", "--json"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 1, done.stderr
    data = json.loads(done.stdout)
    assert data["findings"] == len(broken.EXPECTED_FINDINGS)
    assert broken.STILL_STR in {f["op"] for f in data["namespaces"][0]["findings"]}


def test_model_audit_lists_baked_call_sites_per_op(capsys):
    assert main(["audit", "--model", "fixtures_broken_ops:build", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    sites = {(s["op"], s["argument"]): s for s in data["model"]["call_sites"]}
    still = sites[(broken.STILL_STR, "layer_name")]
    assert still["values"] == [f"model.layers.{i}.mlp" for i in range(broken.LAYERS)]
    assert still["layer_name_like"]
    assert not sites[(f"{broken.NAMESPACE}::reduce", "reduction")]["layer_name_like"]
    hoisted_baked = (f"{broken.NAMESPACE}::hoisted", "layer_name") in sites
    assert hoisted_baked == (not broken.OPAQUE_REGISTERED)  # with the str fallback the "hoisted" op bakes too
    assert main(["audit", "--model", "fixtures_broken_ops:build_tuple", "--strict"]) == 1


@pytest.mark.parametrize("mode", ["opaque", "string"])
def test_reference_model_audit(mode, capsys):
    if mode == "opaque" and load_implementation().opaque_unavailable_reason():
        pytest.skip("opaque unavailable on this torch")
    assert main(["audit", "--model", "hybrid", "--layers", "3", "--mode", mode, "--strict", "--json"]) == (
        0 if mode == "opaque" else 1
    )
    data = json.loads(capsys.readouterr().out)
    baked = {v for s in data["model"]["call_sites"] for v in s["values"]}
    expected = (
        set() if mode == "opaque" else {"model.layers.0.self_attn", "model.layers.1.mixer", "model.layers.2.self_attn"}
    )
    assert baked == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["audit"], "nothing to audit"),
        (["audit", "--import", "fixtures_broken_ops"], "nothing to audit"),
        (["audit", "--namespace", "x", "--include-tests"], "--include-tests needs --walk PACKAGE"),
        (["audit", "--namespace", "x", "--fail-on-import-errors"], "--fail-on-import-errors needs --walk PACKAGE"),
        (
            ["audit", "--walk", "no_such_package_xyz"],
            "--walk 'no_such_package_xyz': cannot import it: ModuleNotFoundError",
        ),
        (
            [
                "audit",
                "--import",
                "fixtures_broken_ops",
                "--namespace",
                broken.NAMESPACE,
                "--sarif",
                "/nonexistent/x.sarif",
            ],
            "--sarif '/nonexistent/x.sarif': cannot write",
        ),
        (["audit", "--namespace", "no_such_namespace"], "namespace 'no_such_namespace' has no registered ops"),
        (["audit", "--import", "no_such_module_xyz", "--namespace", "x"], "--import 'no_such_module_xyz'"),
        (["audit", "--model", "nope"], "neither MODULE:FACTORY nor a reference model"),
        (["audit", "--model", "fixtures_broken_ops:missing"], "has no callable 'missing'"),
        (["audit", "--model", "fixtures_broken_ops:build_nothing"], "the factory returned int"),
        (["audit", "--model", "fixtures_broken_ops:build_raises"], "raised RuntimeError: no weights"),
        (["audit", "--model", "no_such_module_xyz:build"], "cannot import 'no_such_module_xyz'"),
    ],
)
def test_audit_bad_input(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("layername: error: ") and message in err, err


def test_compile_counter_explanation_uses_the_same_strings():
    """The pieces compile stats call unique-because-of-strings hold exactly the strings the graph audit finds."""
    impl = load_implementation()
    model = build_model("decoder", 3, impl, "string")
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    with compile_session() as session, model.context(), torch.no_grad():
        torch.compile(model, backend=session.backend("eager"))(model.example_input())
        torch._dynamo.reset()
        torch.compile(model, backend=capture)(model.example_input())
        stats = session.stats
    explained = {b.value for p in stats.unique_because_of_constants() for b in p.baked}
    audited = {v for site in audit_graph(graphs[0]) for v in site.values}
    assert explained and explained <= audited
    assert audited == {b.value for b in baked_constants(graphs[0])}


def test_audit_error_is_a_value_error():
    with pytest.raises(AuditError, match="no registered ops"):
        audit_namespace("layername_nothing_here")


@pytest.mark.skipif(not compat.opaque_support().supported, reason="needs a torch that hoists opaque types")
def test_model_audit_finds_baked_opaque_constants(capsys):
    """An unhoisted opaque LayerName is baked like a str: ``--model`` names the op and each baked value."""
    code = main(["audit", "--model", "fixtures_unhoisted_impl:build_scaled_layers", "--strict", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 1
    (site,) = data["model"]["call_sites"]
    assert (site["op"], site["argument"], site["kind"]) == (
        "layername_unhoisted_fixture::scale",
        "layer_name",
        "opaque",
    )
    assert site["values"] == [f"LayerName('model.layers.{i}.mlp')" for i in range(3)]

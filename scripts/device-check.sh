#!/usr/bin/env bash
# The GPU check: one preinstalled-torch cell on a machine with one GPU, no network and no nox.
#
#   bash scripts/device-check.sh [CELL]      (default cell: cuda-torch2.11-preinstalled; OUT=folder for results)
#
# Installs this project (no dependencies, no network) and any wheels carried in .whl/ (jsonschema and its
# dependencies where the image lacks them) into a private folder, then: probe; the cell's suite on CUDA in
# both modes with pytest-xdist workers, writing the JSON report and JUnit XML; the 32-layer decoder's compile
# counts on CUDA in both modes; the gate for that cell and its compatibility table (--allow-no-commit: a GPU
# machine's copy of the tree has no .git, so its report records no commit). Exit status: the gate's.
set -uo pipefail
cd "$(dirname "$0")/.."
CELL=${1:-cuda-torch2.11-preinstalled}
MATRIX=${MATRIX:-matrix.toml}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-reports/device}
PY=${PYTHON:-python3}
WORKERS=${WORKERS:-6}
mkdir -p "$OUT"
exec > >(tee "$OUT/device-check.log") 2>&1
export PYTHONUNBUFFERED=1
start=$(date +%s)
stamp() { echo "== $(( $(date +%s) - start )) s: $*"; }

stamp "install (no network)"
SITE=$(mktemp -d)
$PY -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$SITE" . || exit 2
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl || exit 2
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

stamp "probe"
$PY -m pytest_layername probe --json | tee "$OUT/probe.json"

stamp "cell $CELL: the suite on CUDA, both modes, $WORKERS workers"
$PY -m pytest_layername cell "$CELL" --matrix "$MATRIX" --reports "$OUT" --pytest-args "-n $WORKERS -q -rfExX"

stamp "32-layer decoder on $DEVICE, both modes (torch's FX-graph and AOT-autograd cache counters)"
$PY -m pytest_layername compile-stats --device "$DEVICE" --model decoder --layers 32 --mode both --json \
  > "$OUT/compile-stats-$DEVICE.json" && $PY - "$OUT/compile-stats-$DEVICE.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    keys = ["pieces", "unique_pieces", "fx_graph_cache_misses", "fx_graph_cache_hits", "aot_autograd_cache_misses",
            "aot_autograd_cache_hits", "hash_disagreements", "first_run_seconds", "max_abs_error"]
    print(r["mode"], {k: r[k] for k in keys})
PY

stamp "gate for $CELL"
# A copy of the tree without .git records no commit: --allow-no-commit accepts that (in a git checkout the
# gate still expects HEAD, and a report from another commit fails).
$PY -m pytest_layername gate --matrix "$MATRIX" "$OUT" --cell "$CELL" --markdown "$OUT/gate.md" \
  --compat-md "$OUT/compatibility-gpu.md" --allow-no-commit
status=$?
stamp "done (gate exit $status)"
exit $status

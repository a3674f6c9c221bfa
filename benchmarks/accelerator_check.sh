#!/usr/bin/env bash
# One accelerator check on a GPU host with jax[cuda] (or a TPU VM), under 10 minutes:
# the B/16 joint co-training step in bf16 with the chip's best attention (cuDNN / splash),
# ours and the reference-equivalent setting (no fast-branch backward): step time, clips/s,
# model-FLOPs MFU, peak memory. Prints a line per setting; JSON in
# benchmarks/results/accelerator_check.json (or $OUT/accelerator_check.json when OUT is set).
#
#   bash benchmarks/accelerator_check.sh [extra args for accelerator_check.py]
#
# Needs jax (with the accelerator plugin), flax, optax and ml_collections; nothing else of
# requirements.txt is imported on this path. A host without internet installs what is
# missing from wheels brought along: on a connected machine,
#   pip download --no-deps -d wheels ml_collections PyYAML absl-py
# then copy `wheels/` over and run with WHEELS=wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
missing="$("$PYTHON" - <<'PY'
import importlib.util
print(' '.join(name for name in ('jax', 'flax', 'optax', 'ml_collections', 'yaml', 'absl')
               if importlib.util.find_spec(name) is None))
PY
)"
if [ -n "$missing" ]; then
  if [ -z "${WHEELS:-}" ]; then
    echo "missing Python packages: $missing (install them, or set WHEELS=DIR of wheels)" >&2
    exit 2
  fi
  "$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELS" ml_collections
fi
out="${OUT:-benchmarks/results}/accelerator_check.json"
timeout 570 "$PYTHON" benchmarks/accelerator_check.py --out "$out" "$@"

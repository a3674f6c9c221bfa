#!/usr/bin/env bash
# The test command of the README: the fast suite, then the slow real-size checks.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pytest -q -rs -m "not slow" "$@"
# pytest exits 5 when a marker selects nothing; that is not a failure here.
python3 -m pytest -q -rs -m slow "$@" || [ $? -eq 5 ]

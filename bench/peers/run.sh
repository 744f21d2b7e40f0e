#!/usr/bin/env bash
# One command for the whole peer benchmark: makes (or checks) bench/.peers-venv, then runs every
# measurement, peer and nldsl alternating, and writes bench/results/peers.md (+ peers.json).
#
#   bash bench/peers/run.sh [--windows N] [--skip-inplace] [--wait-quiet SECONDS]
#
# About 20 minutes on a 2-core CPU; run it on an otherwise idle machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bash "$ROOT/bench/peers/setup.sh"
PY="${NLDSL_PYTHON:-$ROOT/.venv/bin/python}"
exec "$PY" "$ROOT/bench/peer_bench.py" "$@"

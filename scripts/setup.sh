#!/usr/bin/env bash
# Install everything (torch CPU build, Graphviz, nldsl, the Shakespeare corpus) into .venv/ and run the
# main job on Hope: check, explain, draw, compile, and a short training run of the compiled model.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install.sh
install_env ""
mkdir -p build
echo "== nldsl check specs/hope.nl"
.venv/bin/nldsl check specs/hope.nl
echo "== nldsl explain specs/hope.nl"
.venv/bin/nldsl explain specs/hope.nl
echo "== nldsl render specs/hope.nl"
.venv/bin/nldsl render specs/hope.nl -o build/hope.svg
.venv/bin/nldsl render specs/hope.nl -o build/hope_timeline.svg --timeline
echo "== nldsl compile specs/hope.nl"
.venv/bin/nldsl compile specs/hope.nl -o build/hope --set dim=128 --set layers=2
echo "== a short training run of the compiled Hope (Shakespeare, byte-level)"
.venv/bin/python build/hope/train.py --steps 20 --batch 4 --context 256

#!/usr/bin/env bash
# Install everything (torch CPU build, Graphviz, nldsl, the Shakespeare corpus) into .venv/ and run the
# main job on Hope: check, explain, draw, compile, then train it on Shakespeare, evaluate it and sample it.
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
echo "== nldsl train: Hope learns Shakespeare (byte-level; compiled; a few minutes on 2 cores)"
rm -rf runs/hope-main
.venv/bin/nldsl train specs/hope.nl --set dim=128 --set layers=2 --steps 200 --batch 4 --context 256 \
  --compile --eval-every 100 --out runs/hope-main --sample 300
echo "== nldsl eval: held-out bits per byte and LAMBADA (first 200 passages)"
.venv/bin/nldsl eval runs/hope-main --task bpb lambada --limit 200
echo "== nldsl generate"
.venv/bin/nldsl generate runs/hope-main --prompt "ROMEO:" --bytes 300

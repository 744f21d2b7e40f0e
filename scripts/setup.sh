#!/usr/bin/env bash
# Install everything (torch CPU build, Graphviz, nldsl) into .venv/ and run the main job on Hope.
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

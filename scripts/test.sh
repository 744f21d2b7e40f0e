#!/usr/bin/env bash
# Install nldsl with its test tools into .venv/, lint, and run the test suite against the install.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install.sh
install_env "[test]"
.venv/bin/ruff check nldsl backends cli.py tests editors
.venv/bin/pytest "$@"

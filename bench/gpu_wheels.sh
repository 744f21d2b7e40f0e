#!/usr/bin/env bash
# Fetch, here, the wheels a GPU machine without internet needs to run bench/gpu_check.py from a
# source checkout: the front end's parser and models (its image already has torch, triton, networkx,
# rich, pygments, safetensors and matplotlib). They land in .whl/ (git-ignored); on the GPU machine:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site:. python3 bench/gpu_check.py
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl lark==1.3.1 interegular==0.3.3 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
  typing-inspection==0.4.5
ls .whl

#!/usr/bin/env bash
# Creates bench/.peers-venv: the two public implementations the peer benchmark compares against,
# in their own environment (never the project's), on the same CPU torch as the project.
#
#   bash bench/peers/setup.sh
#
# torch 2.13.0+cpu goes in first, and every later install runs under a constraint that pins it, so no
# dependency can replace it (with a CUDA build or another version): pip fails instead. Idempotent:
# a venv that already holds the pinned versions is left as it is.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/../.peers-venv"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
TORCH=2.13.0
NL=0.2.0
TITANS=0.5.5

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# (this machine's pip configuration names a local index whose missing folders pip warns about)
pip() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

ok() {
  "$VENV/bin/python" - "$TORCH" "$NL" "$TITANS" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
torch, nl, titans = sys.argv[1:]
assert version("torch").split("+")[0] == torch, version("torch")
assert version("nested-learning") == nl
assert version("titans-pytorch") == titans
import torch as t, nested_learning, titans_pytorch  # noqa: E401,F401
assert not t.version.cuda, "a CUDA torch got in"
PY
}

if ok; then
  echo "bench/.peers-venv is ready (torch $TORCH, nested-learning $NL, titans-pytorch $TITANS)"
  exit 0
fi

CONSTRAINT="$(mktemp)"
trap 'rm -f "$CONSTRAINT"' EXIT
echo "torch==$TORCH+cpu" > "$CONSTRAINT"

pip install --quiet --upgrade pip
# The CPU build, by its local version (+cpu), so a CUDA wheel can never satisfy it: pip finds it
# wherever the machine's pip configuration points (here the local wheel folder, /opt/wheels).
if ! pip install --quiet "torch==$TORCH+cpu"; then
  echo "bench/peers/setup.sh: no torch==$TORCH+cpu wheel reachable; point pip at one (PIP_FIND_LINKS or" \
       "PIP_EXTRA_INDEX_URL) and run again" >&2
  exit 1
fi
# The peers with their declared dependencies; the constraint keeps torch where it is.
pip install --quiet -c "$CONSTRAINT" "nested-learning==$NL" "titans-pytorch==$TITANS"
ok || { echo "bench/.peers-venv: verification failed" >&2; exit 1; }
"$VENV/bin/python" -c "import torch, importlib.metadata as m; print('bench/.peers-venv ready: torch', torch.__version__, '| nested-learning', m.version('nested-learning'), '| titans-pytorch', m.version('titans-pytorch'))"

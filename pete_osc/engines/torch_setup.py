"""The torch engine's set-up choices: the device, int8 weights on the CPU (``--quantize``),
the fused decode step (``--kernels``), and the chat prompt split around the image."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager, nullcontext

import numpy as np

from ..errors import PeteError

log = logging.getLogger(__name__)

_PLACEHOLDER = "\x00IMAGE\x00"


def pick_device(torch, wanted: str | None):
    """The device ``--device`` names, else the best there is: CUDA, then Metal, then CPU."""
    if wanted == "cuda" and not torch.cuda.is_available():
        raise PeteError("--device cuda: no CUDA GPU is visible to PyTorch")
    if wanted == "mps" and not torch.backends.mps.is_available():
        raise PeteError("--device mps: Apple's Metal backend is not available to PyTorch here")
    if wanted:
        device = torch.device(wanted)
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    elif torch.backends.mps.is_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    if device.type == "cpu":
        # Values too small for a float's exponent (denormals) cost an x86 CPU up to a
        # hundred times a normal one; flushed to zero, FastViT's convolutions on a camera
        # frame took 0.74 s -> 0.11 s on the 2-core CI machine (random weights, 128 px).
        # Set before the model's first op, so the worker threads started then inherit it.
        torch.set_flush_denormal(True)
    return device


def int8_language_model(engine, mode: str) -> bool:
    """``--quantize``: int8 weights for the language model (auto: on the CPU only,
    where a token's time is reading the weights; see engines.int8)."""
    from .int8 import available, int8_weights

    torch = engine.torch
    if mode == "off" or (mode == "auto" and engine.device.type != "cpu"):
        return False
    if engine.device.type != "cpu":
        raise PeteError(f"--quantize int8: the int8 kernel is for the CPU, not "
                        f"{engine.device.type}; use --quantize auto or off there")
    if mode == "auto" and not available(torch):
        log.warning("PyTorch %s has no int8 weight kernel: the language model stays in "
                    "fp32 (slower on the CPU)", torch.__version__)
        return False
    language = getattr(engine.model.model, "language_model", None) or engine.model.language_model
    swapped = int8_weights(torch, language, engine.model)
    engine.progress(f"language model in int8 on the CPU ({swapped} weight matrices; "
                  "--quantize off keeps fp32)")
    return True


class SparseHead:
    """On the CPU with int8 weights and the grammar: a step where the grammar allows only
    a few tokens next (a colour, a level, a digit, the newline: about half the steps of
    a DIRECTOR answer) reads only those tokens' rows of the output layer, a quarter of a
    step's bytes (151,936 rows) otherwise. The allowed tokens' logits are the same
    numbers; every other is minus infinity, as the grammar's mask makes it anyway.
    Call it around a model pass: ``with engine._sparse(): ...``."""

    LIMIT = 8192  # more allowed tokens than this (a free-text word): every row is read

    def __init__(self, engine):
        self.engine = engine
        self.head = engine.model.lm_head
        self.steps = 0  # passes that read the allowed rows only

    @contextmanager
    def __call__(self):
        constraint = self.engine.constraint
        allowed = None if constraint is None else np.flatnonzero(constraint.allowed())
        if allowed is None or not 0 < len(allowed) <= self.LIMIT:
            yield
            return
        self.head.only = self.engine.torch.from_numpy(allowed)
        self.steps += 1
        try:
            yield
        finally:
            self.head.only = None


def sparse_head(engine):
    """The output layer's :class:`SparseHead` where its weights are int8 (the CPU), else a
    context that does nothing."""
    return SparseHead(engine) if engine.int8 and hasattr(engine.model.lm_head, "only") else nullcontext


def fused_decoder(engine, kernels: str):
    """``--kernels``: auto uses the fused decode step with CUDA graphs over a static
    cache where Triton and the model's shapes allow; fused insists; off keeps
    transformers' step."""
    if kernels == "off" or not engine.static or (kernels == "auto" and not engine.fast):
        return None
    if engine.int8:
        if kernels == "fused":
            raise PeteError("--kernels fused reads bf16 or fp32 weights: use it with "
                            "--quantize off")
        return None
    try:
        from .fused import FusedDecoder

        language = getattr(engine.model.model, "language_model", None) or engine.model.language_model
        decoder = FusedDecoder(engine.torch, language, engine.model.get_output_embeddings(),
                               graph=engine.device.type == "cuda")
    except (ImportError, ValueError) as exc:
        if kernels == "fused":
            raise PeteError(f"--kernels fused: not available here ({exc})") from None
        log.info("fused decode kernels not used (%s): transformers' decode step", exc)
        return None
    engine.progress("decode step: fused kernels in one CUDA graph (--kernels off: "
                  "transformers' own)" if engine.device.type == "cuda" else
                  "decode step: fused kernels")
    return decoder


# Session 15's two CUDA paths for the single frame, off unless named in PETE_OSC_TRY
# (comma-separated): "fused-forced" (FusedForced) and "vision-graph" (Graphed). Both pass
# their tests in Triton's interpreter on the CPU, but their first run on a GPU (an H100,
# session 16, both on) ended the process in warm-up: an illegal memory access in the
# first fused forced run, and with the grammar an illegal instruction on the second frame.
# The vision graph ran three warm-up frames there without a fault, but it was never
# measured or checked against the compiled tower's output. (Session 17 found the likely
# cause on the CPU: FusedForced.run's recorded graphs read a slot tensor that was freed
# after recording. Fixed; not yet run on a GPU.) A show keeps the paths that have run on
# a GPU.
TRY = "PETE_OSC_TRY"


def trying(name: str) -> bool:
    """``name`` is named in PETE_OSC_TRY: an untried path is asked for (benchmarks)."""
    return name in os.environ.get(TRY, "").split(",")


def vision(torch, encode, compiled):
    """The single frame's vision tower on CUDA: compiled (torch.compile's CUDA graphs), or
    :class:`Graphed` where PETE_OSC_TRY names vision-graph."""
    return Graphed(torch, encode) if trying("vision-graph") else compiled(encode)


def fused_forced(engine):
    """The forced runs' fused kernels (:class:`FusedForced`) where the decode step is
    fused and PETE_OSC_TRY names fused-forced, else None (transformers' padded graph)."""
    if engine._fused is None or not trying("fused-forced"):
        return None
    try:
        return FusedForced(engine, engine._fused)
    except ValueError as exc:
        log.info("forced runs in transformers' padded graph (%s)", exc)
        return None


def split_prompt(tokenizer, system_prompt: str, instruction: str,
                 context: str = "") -> tuple[list[int], list[int], list[int]]:
    """Token ids of the chat prompt: the DIRECTOR prefix (the system prompt and the
    user turn's start), the context, then the image, then the rest (the instruction and
    the assistant turn's start).

    The chat template is rendered with a placeholder where the image goes (after the
    context, before the instruction, as FastVLM was trained), and the parts are tokenized
    separately: the prefix's KV cache is kept across frames, the context's while it
    stays the same.
    """
    lead = context + "\n" if context else ""
    messages = [{"role": "system", "content": system_prompt},
                {"role": "user", "content": lead + _PLACEHOLDER + "\n" + instruction}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    before, after = text.split(_PLACEHOLDER)
    system = before[:len(before) - len(lead)]
    encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"] if s else []  # noqa: E731
    return encode(system), encode(lead), encode(after)


def record(torch, body):
    """``body`` recorded as a CUDA graph (after two runs on a side stream, as
    torch.cuda.graphs asks): (the graph, its output)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            body()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = body()
    return graph, out


class Graphed:
    """``fn(x)`` as one recorded CUDA graph per shape of ``x`` (the single frame's vision
    tower: under torch.compile 7.5-8 ms at 128 px on an H200; recorded whole, the batch's
    took ~2 ms). The output is the graph's own tensor: read it before the next call. A
    tower that cannot be recorded runs as it is (said once)."""

    def __init__(self, torch, fn):
        self.torch, self.fn = torch, fn
        self.graphs: dict | None = {}

    def __call__(self, x):
        if self.graphs is None:
            return self.fn(x)
        key = tuple(x.shape)
        if key not in self.graphs:
            buffer = x.clone()
            try:
                self.graphs[key] = (*record(self.torch, lambda: self.fn(buffer)), buffer)
            except Exception as exc:
                log.warning("the vision tower could not be recorded as one CUDA graph "
                            "(%s: %s); it runs as it is", type(exc).__name__, exc)
                self.graphs = None
                return self.fn(x)
        graph, out, buffer = self.graphs[key]
        buffer.copy_(x)
        graph.replay()
        return out


class FusedForced:
    """The single frame's forced runs (the chosen token and the grammar's forced text
    after it) in the batch's fused kernels (engines.fused_rows) over the engine's static
    cache, as one row with no shared prefix: a run of up to 8 tokens in one call, where
    transformers' padded graph took 2.5-3 ms on an H200. On CUDA one recorded graph per
    width in WIDTHS (a run is padded to the next; the padding's keys and values land past
    the run, overwritten by the next step and never read before)."""

    WIDTHS = (2, 4, 8)

    def __init__(self, engine, decoder):
        from .fused_rows import FusedRows

        self.engine, self.torch = engine, engine.torch
        self.graph = engine.device.type == "cuda"
        self.k = self.v = self.pk = self.pv = []
        self.tail, self.prefix_len, self.cache = 0, 0, None
        self.scale = 1.0 / decoder.head_dim ** 0.5
        self.kernels = FusedRows(self, decoder)
        self.graphs: dict = {}  # width -> (graph, logits, (x, start, last))

    def bind(self, cache) -> None:
        """Run over ``cache`` (the engine's StaticCache): its layers as slot 0's tail."""
        if cache is self.cache:
            return
        self.cache, self.graphs = cache, {}
        self.k = self.pk = [layer.keys for layer in cache.layers]
        self.v = self.pv = [layer.values for layer in cache.layers]
        self.tail = cache.layers[0].keys.shape[2]

    def runs(self, ids: list[int], position: int):
        """``ids`` at ``position`` on, in runs of up to 8; the logits after the last.
        transformers' write position is left after them (the next frame's, a fallback's)."""
        self.bind(self.engine.cache)
        top = self.WIDTHS[-1]
        try:
            for at in range(0, len(ids), top):
                logits = self.run(ids[at:at + top], position + at)
        except Exception as exc:  # (first met at warm-up, where every width is recorded)
            log.warning("forced runs cannot run in the fused kernels here (%s: %s); "
                        "transformers' padded pass takes them", type(exc).__name__, exc)
            self.engine._forced = None
            return self.engine._run(ids, position)
        self.engine._rewind(to=position + len(ids))
        return logits

    def run(self, ids: list[int], position: int):
        """The logits (1, vocab) after ``ids`` (at most the widest of WIDTHS) written at
        ``position`` on. On CUDA the tensor is a graph's own: read it before the next run."""
        torch, engine = self.torch, self.engine
        width = next(w for w in self.WIDTHS if w >= len(ids))
        padded = ids + [ids[-1]] * (width - len(ids))
        x = engine._embed(torch.tensor([padded], device=engine.device))
        at = torch.tensor([position], device=engine.device)
        last = torch.tensor([len(ids) - 1], device=engine.device)
        if not self.graph:
            return self.kernels.forward(x, torch.zeros_like(at), at, last)
        if width not in self.graphs:
            # Every tensor the graph reads is kept with it: one freed is soon another's
            # memory, read at each replay (the slot index was, in session 16's crash).
            inputs = (x.clone(), torch.zeros_like(at), torch.full_like(at, self.tail - width),
                      last.clone())
            graph, out = record(torch, lambda: self.kernels.forward(*inputs))
            self.graphs[width] = (graph, out, inputs)
        graph, out, (gx, _, gat, glast) = self.graphs[width]
        gx.copy_(x)
        gat.copy_(at)
        glast.copy_(last)
        graph.replay()
        return out

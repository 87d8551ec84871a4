"""The PyTorch engine: transformers' FastVlmForConditionalGeneration on CUDA, MPS or CPU.

Per frame only the image and the short instruction after it are prefilled: the DIRECTOR
prefix (system prompt and the start of the user turn) is run through the model once at
load and its KV cache reused, cut back to the prefix after each frame. The frame reaches
the vision encoder at the chosen size, giving (size/64)^2 image tokens.

On CUDA everything runs from a static KV cache as recorded CUDA graphs (eager decode of a
0.5B model is bound by kernel launches, not by the GPU): the vision tower, the prefill
(``torch.compile``), the fused decode step and forced runs (engines.fused, fused_rows);
all recorded in ``warm_up`` at start, not on stage.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Callable, Iterator

import numpy as np

from ..errors import PeteError
from ..records import Prefill, Token
from . import torch_setup as setup
from .base import BaseEngine, GenerationSettings, Prompt, model_source, require
from .decode import IncrementalDecoder, decode
from .models import DEFAULT_MODELS

log = logging.getLogger(__name__)

DEFAULT_MODEL = DEFAULT_MODELS["torch"]
# Prompts whose prefix cache is kept (dynamic caches only; a 600-token prefix of
# FastVLM-0.5B is about 7 MB in bf16).
PROMPTS_KEPT = 4
# Positions a static cache keeps spare beyond the prompt it was made for.
STATIC_HEADROOM = 128
# Tokens one CUDA-graph step takes when the grammar forces text (the chosen token and the
# forced ones after it): shorter runs are padded to it, longer ones split.
FORCED_WIDTH = 8


class TorchEngine(BaseEngine):
    """Load once; stream tokens per frame; see the module docstring."""

    name = "torch"

    def __init__(self, model: str, system_prompt: str, instruction: str,
                 settings: GenerationSettings, device: str | None = None, compile: bool = True,
                 progress: Callable[[str], None] = lambda message: None,
                 static: bool | None = None, prefix_cache: bool = True,
                 path: str | None = None, jump_forward: bool = True, weights: str = "auto",
                 kernels: str = "auto"):
        # (transformers.models.fast_vlm: a transformers without FastVLM says it is missing)
        torch, transformers, _ = require("torch", "torch, torchvision, timm and transformers",
                                         "pip install 'pete-osc[torch]'", "torch", "transformers",
                                         "transformers.models.fast_vlm")
        from transformers import AutoTokenizer, FastVlmForConditionalGeneration
        super().__init__()
        self.torch = torch
        self.model_id = model
        self.settings = settings
        self.progress = progress
        self.device = setup.pick_device(torch, device)
        self.dtype = {"cuda": torch.bfloat16, "mps": torch.float16}.get(self.device.type, torch.float32)
        source = model_source(path or model)
        transformers.utils.logging.disable_progress_bar()  # stderr is for our status lines
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = FastVlmForConditionalGeneration.from_pretrained(
                source, dtype=self.dtype).to(self.device).eval()
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise PeteError(f"model {model} could not be loaded by transformers' FastVLM: "
                            f"{type(exc).__name__}: {reason[:200]}. Offline? Download it once "
                            f"(pete-osc download {DEFAULT_MODEL}) or pass a local folder") from None
        self.int8 = setup.int8_language_model(self, weights)
        # The cache argument's name in this transformers (past_key_values, later cache).
        import inspect

        self._cache_arg = ("cache" if "cache" in inspect.signature(self.model.forward).parameters
                           else "past_key_values")
        self.image_tokens = (settings.size // 64) ** 2
        self.prefix_cache = prefix_cache  # (off: to measure what the cache saves)
        self.eos = {t for t in (self.tokenizer.eos_token_id, self.model.generation_config.eos_token_id)
                    if t is not None for t in (t if isinstance(t, list) else [t])}
        self.constraint = None  # a pete_osc.engines.constrain.Constraint, see constrain()
        # Forced text runs with the token before it, in one pass (off: to measure it).
        self.jump_forward = jump_forward
        self.fast = compile and self.device.type == "cuda"
        # A static cache for the compiled path (and, for tests, on request anywhere).
        self.static = self.fast if static is None else static
        self.max_len, self.cache = 0, None
        self.prefix_prefills = 0  # DIRECTOR prefixes run through the model (not per frame)
        self.prompt_positions = 0  # positions run by use_prompt (prefixes and contexts)
        self.prompt: Prompt | None = None
        # System prompt -> (prefix ids, its cache), newest last. A dynamic cache is kept
        # per prompt, so going back to an earlier DIRECTOR.md costs nothing; the static
        # cache (CUDA graphs hold its addresses) is one, prefilled again instead.
        self._prompts: OrderedDict = OrderedDict()
        self._step, self._vision, self._prefill, self._wide = (
            self._decode_step, self._encode, self._forward, self._wide_step)
        if self.fast:
            # Every shape is fixed for a given input size (image tokens, instruction, one
            # token per step), so the vision encoder, the frame's prefill and the decode
            # step each become one replayed CUDA graph instead of hundreds of launches.
            compiled = lambda fn: torch.compile(fn, mode="reduce-overhead", fullgraph=False)  # noqa: E731
            self._step, self._vision, self._prefill, self._wide = (
                compiled(self._decode_step), setup.vision(torch, self._encode, compiled),
                compiled(self._forward), compiled(self._wide_step))
        # The decode step as fused Triton kernels in one CUDA graph (see engines.fused);
        # the forced runs in the batch's kernels only where asked (torch_setup.TRY).
        self._fused = setup.fused_decoder(self, kernels)
        self._forced = setup.fused_forced(self)
        self._sparse = setup.sparse_head(self)  # (the CPU's int8 output layer, see there)
        self.fused_steps = 0
        self.use_prompt(Prompt(system_prompt, instruction))

    def _new_cache(self):
        from transformers import DynamicCache, StaticCache

        if self.static:
            # A fixed-size cache keeps tensor shapes constant, which CUDA graphs need.
            return StaticCache(config=self.model.config, max_cache_len=self.max_len)
        return DynamicCache(config=self.model.config)

    def use_prompt(self, prompt: Prompt) -> float:
        """Make ``prompt`` current: its system prompt (before the image) prefilled unless
        its cache is kept, its context (before the image too, but new every frame where it
        holds {previous}) prefilled on top of it unless it is already there, its
        instruction (after the image) tokenized for the frame's prefill. Returns the
        seconds spent prefilling (see Engine.use_prompt)."""
        if prompt == self.prompt:
            return 0.0
        torch = self.torch
        t0 = time.perf_counter()
        prefix, context, suffix = setup.split_prompt(self.tokenizer, prompt.system,
                                                     prompt.instruction, prompt.context)
        need = self._need(len(prefix) + len(context) + self.image_tokens + len(suffix))
        self._suffix = torch.tensor([suffix], device=self.device)
        grow = need > self.max_len
        if grow:
            # Room for an edit or a longer context: a new static cache (and new CUDA
            # graphs) only when a prompt grows past it.
            self.max_len = need + (STATIC_HEADROOM if self.static else 0)
        same_system = self.prompt is not None and prompt.system == self.prompt.system \
            and not (grow and self.static)
        self.prompt = prompt
        ran = 0
        with torch.inference_mode():  # (the static cache's tensors are inference tensors)
            if not same_system:
                kept = self._prompts.get(prompt.system) if not self.static else None
                if kept is None:
                    cache = (self.cache if self.static and not grow and self.cache is not None
                             else self._new_cache())
                    # [system prompt ids, the cache, the context ids on top of them]
                    kept = [torch.tensor([prefix], device=self.device), cache, []]
                    self.cache = cache
                    self._rewind(to=0)
                    self._forward(ids=kept[0], pos=self._positions(0, kept[0].shape[1]))
                    ran += kept[0].shape[1]
                    self.prefix_prefills += 1
                    self._prompts[prompt.system] = kept
                    while len(self._prompts) > PROMPTS_KEPT:
                        self._prompts.popitem(last=False)
                self._prompts.move_to_end(prompt.system)
                self._kept = kept
                self._prefix_ids, self.cache = kept[0], kept[1]
                self.system_len = self._prefix_ids.shape[1]
            if self._kept[2] != context:
                self._rewind(to=self.system_len)
                if context:
                    self._forward(ids=torch.tensor([context], device=self.device),
                                  pos=self._positions(self.system_len, len(context)))
                    ran += len(context)
                self._kept[2] = context
        self._context_ids = torch.tensor([context], dtype=torch.long, device=self.device)
        self.prefix_len = self.system_len + len(context)
        self.prompt_positions += ran
        return time.perf_counter() - t0 if ran else 0.0

    def _need(self, prompt_len: int) -> int:
        """Cache positions a frame can fill: the prompt, the answer, a padded forced run."""
        return prompt_len + self.settings.max_tokens + 1 + (FORCED_WIDTH if self.static else 0)

    def set_max_tokens(self, max_tokens: int) -> None:
        """A new token limit per answer (sized from the grammar): a static cache too small
        for it is made again, with the prefix prefilled."""
        from dataclasses import replace

        self.settings = replace(self.settings, max_tokens=max_tokens)
        prompt = self.prompt
        if self._need(self.prefix_len + self.image_tokens + self._suffix.shape[1]) > self.max_len:
            self.prompt = None
            self.use_prompt(prompt)

    supports_constraint = True

    def constrain(self, director) -> None:
        """Decode only answers that DIRECTOR.md's grammar allows (see pete_osc.engines.constrain)."""
        from .constrain import Constraint

        torch = self.torch
        vocab = self.model.get_output_embeddings().weight.shape[0]
        self.constraint = Constraint(director, self.tokenizer, vocab)
        self.eos.add(self.constraint.eos)
        # The bitmask (one bit per token) is written by llguidance into pinned memory,
        # copied to the device (19 KB for Qwen2's vocabulary) and unpacked there.
        cuda = self.device.type == "cuda"
        self._bitmask = torch.full((self.constraint.words,), -1, dtype=torch.int32, pin_memory=cuda)
        self._bitmask_dev = torch.empty_like(self._bitmask, device=self.device)
        self._bit = torch.arange(32, dtype=torch.int32, device=self.device)

    warms_up = True

    def warm_up(self) -> float:
        """Run throw-away frames so that kernels (and, on CUDA, the compiled decode graph)
        are ready before the first real frame. Returns the seconds it took."""
        t0 = time.perf_counter()
        blank = np.zeros((self.settings.size, self.settings.size, 3), np.uint8)
        rounds = 3 if self.fast else 1  # CUDA graph trees record on the third call
        for i in range(rounds):
            if self.fast:
                self.progress(f"compiling the decode step ({i + 1}/{rounds}) ...")
            for _ in self._generate(blank, max_tokens=min(8, self.settings.max_tokens)):
                pass
        if self.fast:  # the steps for forced text: their own graphs, recorded now too
            with self.torch.inference_mode():
                for _ in range(rounds):
                    for width in (setup.FusedForced.WIDTHS if self._forced else (2,)):
                        self._rewind()
                        self._run([0] * width, self.prefix_len)
                self._rewind()
        return time.perf_counter() - t0

    def batch(self, slots: int):
        """Several sources' frames decoded together (see pete_osc.engines.torch_rows)."""
        from .torch_rows import open_batch

        return open_batch(self, slots)

    # ---- per frame ---------------------------------------------------------------------
    def stream(self, image_rgb: np.ndarray, prompt: Prompt | None = None) -> Iterator[Token]:
        """Stream the answer for one square RGB frame (see Engine.stream)."""
        # The frame starts now: a context not prefilled before it (see use_prompt) is
        # prefilled on its time, and counted in its prefill.
        started, ran = time.perf_counter(), self.prompt_positions
        prompt_s = self.use_prompt(prompt) if prompt is not None else None
        return self._generate(image_rgb, self.settings.max_tokens, started,
                              self.prompt_positions - ran, prompt_s)

    def _generate(self, image_rgb: np.ndarray, max_tokens: int, started: float | None = None,
                  prefilled: int = 0, prompt_s: float | None = None) -> Iterator[Token]:
        torch = self.torch
        self.aborted.clear()
        decoder = IncrementalDecoder(lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True))
        started = started or time.perf_counter()
        constraint = self.constraint
        jump = constraint is not None and self.jump_forward
        if constraint is not None:
            constraint.reset()
        # The answer's forced start (the first key) is prefilled with the frame.
        start = constraint.forced()[:max_tokens - 1] if jump else []
        with torch.inference_mode():
            self._rewind(to=None if self.prefix_cache else 0)
            if not self.prefix_cache:
                ids = torch.cat([self._prefix_ids, self._context_ids], dim=1)
                self._forward(ids=ids, pos=self._positions(0, self.prefix_len))
                prefilled += self.prefix_len
            pixels = torch.from_numpy(np.ascontiguousarray(image_rgb)).to(self.device)
            pixels = pixels.permute(2, 0, 1)[None].to(self.dtype) / 255.0
            features = self._vision(pixels)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            vision = time.perf_counter() - started
            ids = self._suffix
            if start:
                ids = torch.cat([ids, torch.tensor([start], device=self.device)], dim=1)
            embeds = torch.cat([features.to(self.dtype), self._embed(ids)], dim=1)
            position = self.prefix_len
            with self._sparse():
                logits = self._prefill(embeds=embeds, pos=self._positions(position, embeds.shape[1]))
            position += embeds.shape[1]
            first = self._choose(logits)
        prefill = Prefill(started, position - len(start), prefilled + embeds.shape[1], vision,
                          prompt_s)
        yield from decode(_Steps(self, position), first, start=start, max_tokens=max_tokens,
                          eos=self.eos, constraint=constraint, jump=jump, decoder=decoder,
                          prefill=prefill, stop=self.aborted)

    def _run(self, ids: list[int], position: int):
        """Run ``ids`` (a chosen token and the forced ones after it) at ``position``; the
        logits after the last. One token: the decode step. More: the fused forced runs, or
        one pass, padded to FORCED_WIDTH for a static cache (CUDA graphs need one shape;
        the junk tail is overwritten by the next step, hidden by the causal mask till then)."""
        torch = self.torch
        if len(ids) == 1 and self._fused is not None:
            self._fused.bind(self.cache)
            self.fused_steps += 1
            return self._fused.step(ids[0], position)
        if len(ids) > 1 and self._forced is not None:
            return self._forced.runs(ids, position)
        if len(ids) == 1 or not self.static:
            step = self._step if len(ids) == 1 else self._decode_step
            return step(torch.tensor([ids], device=self.device), self._positions(position, len(ids)))
        for at in range(0, len(ids), FORCED_WIDTH):
            chunk = ids[at:at + FORCED_WIDTH]
            padded = chunk + [chunk[-1]] * (FORCED_WIDTH - len(chunk))
            logits = self._wide(torch.tensor([padded], device=self.device),
                                self._positions(position + at, FORCED_WIDTH),
                                torch.tensor([len(chunk) - 1], device=self.device))
            self._rewind(to=position + at + len(chunk))  # the static cache's write position
        return logits

    def _rewind(self, to: int | None = None) -> None:
        """Back to the end of the DIRECTOR prefix (or ``to``), keeping its keys and values:
        a dynamic cache is cropped; a static one (CUDA graphs hold its addresses) only
        moves its write position, the causal mask hiding what is stale till overwritten."""
        to = self.prefix_len if to is None else to
        if not self.static:
            extra = self.cache.get_seq_length() - to
            if extra > 0:
                self.cache.crop(-extra)
            return
        written = [layer.cumulative_length for layer in self.cache.layers
                   if hasattr(getattr(layer, "cumulative_length", None), "fill_")]
        if written:  # in place (the tensors' addresses are captured), two launches for all
            self.torch._foreach_zero_(written)
            self.torch._foreach_add_(written, to)

    def _encode(self, pixels):
        """Image features in the language model's space: (1, image tokens, hidden)."""
        features = self.model.model.get_image_features(pixel_values=pixels).pooler_output
        if isinstance(features, (list, tuple)):  # some transformers versions: one per image
            features = self.torch.cat([f.reshape(1, -1, f.shape[-1]) for f in features], dim=1)
        return features

    def _embed(self, ids):
        return self.model.get_input_embeddings()(ids)

    def _positions(self, start: int, length: int):
        # (a tensor made outside the compiled prefill: a DIRECTOR.md of another length would recompile)
        return self.torch.arange(start, start + length, device=self.device)

    def _forward(self, ids=None, embeds=None, pos=None):
        """Prefill ``ids`` or ``embeds`` at positions ``pos``; the last position's logits."""
        out = self.model(input_ids=ids, inputs_embeds=embeds, cache_position=pos,
                         position_ids=pos[None], use_cache=True, logits_to_keep=1,
                         **{self._cache_arg: self.cache})
        return out.logits[:, -1, :]

    def _wide_step(self, ids, pos, last):
        """A padded forced run: the logits at index ``last`` (a tensor, so one graph)."""
        out = self.model(input_ids=ids, cache_position=pos, position_ids=pos[None],
                         use_cache=True, **{self._cache_arg: self.cache})
        return out.logits[0].index_select(0, last)

    def _decode_step(self, token, pos):  # (a forced run too: only its last logits are made)
        out = self.model(input_ids=token, cache_position=pos, position_ids=pos[None],
                         use_cache=True, logits_to_keep=1, **{self._cache_arg: self.cache})
        return out.logits[:, -1, :]

    def _choose(self, logits):
        torch = self.torch
        if self.constraint is not None:
            # Computed on the CPU while the GPU still runs the step just launched.
            self.constraint.fill(self._bitmask.data_ptr(), self._bitmask.numel() * 4)
            self._bitmask_dev.copy_(self._bitmask, non_blocking=True)
            allowed = ((self._bitmask_dev[:, None] >> self._bit) & 1).view(-1)[: logits.shape[-1]]
            logits = logits.masked_fill(allowed[None] == 0, float("-inf"))
        if self.settings.temperature <= 0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits.float() / self.settings.temperature, dim=-1)
        return torch.multinomial(probs, 1)[:, 0]

    def close(self) -> None:
        self.model = self.cache = None


class _Steps:
    """The torch engine's model calls for one frame (see pete_osc.engines.decode)."""

    ahead = False  # a step needs the token's id first (and the grammar's forced text)

    def __init__(self, engine: TorchEngine, position: int):
        self.engine = engine
        self.position = position

    def run(self, ids: list[int]):
        with self.engine.torch.inference_mode(), self.engine._sparse():
            logits = self.engine._run(ids, self.position)
        self.position += len(ids)
        return logits

    def choose(self, logits):
        with self.engine.torch.inference_mode():
            return self.engine._choose(logits)

    def read(self, token) -> int:
        return int(token)  # waits for the GPU: the token must reach the music now

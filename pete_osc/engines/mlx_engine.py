"""The mlx-vlm engine: any VLM that ``mlx_vlm.load`` reads, FastVLM by default.

Metal on Apple Silicon, ``mlx[cpu]`` elsewhere. The frame reaches the vision encoder at
the chosen size: mlx-vlm's FastVLM processor would otherwise scale every image to
1024x1024 (256 image tokens instead of 4 at 128 px).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Iterator

import numpy as np

from ..errors import PeteError
from ..records import Prefill, Token
from .base import BaseEngine, GenerationSettings, Prompt, model_source, require
from .decode import IncrementalDecoder, decode
from .models import DEFAULT_MODELS

log = logging.getLogger(__name__)

DEFAULT_MODEL = DEFAULT_MODELS["mlx"]
PROMPTS_KEPT = 4  # prompts whose prefix cache is kept
# Ids known to load in mlx-vlm 0.7 (named in the error when a model fails to load).
KNOWN_GOOD = (
    "mlx-community/FastVLM-0.5B-bf16",
    "mlx-community/SmolVLM2-256M-Video-Instruct-mlx",
    "mlx-community/SmolVLM2-500M-Video-Instruct-mlx",
)


class MlxEngine(BaseEngine):
    """Load a model once with mlx-vlm; stream tokens for one frame at a time."""

    name = "mlx"

    def __init__(self, model: str, system_prompt: str, instruction: str,
                 settings: GenerationSettings, prefix_cache: bool = True,
                 path: str | None = None, jump_forward: bool = True):
        mlx_vlm, prompt_utils = require("mlx", "mlx-vlm", "pip install 'pete-osc[mlx]' or run "
                                        "./install.sh", "mlx_vlm", "mlx_vlm.prompt_utils")
        super().__init__()
        self.model_id = model
        self.settings = settings
        self._mlx_vlm = mlx_vlm
        self.model, self.processor = _load(mlx_vlm, model, path)
        _upcast_on_cpu(self.model)
        self._sized = _set_input_size(self.processor, settings.size)
        self._template = prompt_utils.apply_chat_template
        self._use_prefix = prefix_cache and self._sized
        self.constraint = None  # a pete_osc.engines.constrain.Constraint, see constrain()
        # Text the grammar forces runs through the model with the token before it, in one
        # pass (off only to measure it against one step per token).
        self.jump_forward = jump_forward
        self.current: Prompt | None = None
        self.prompt = ""  # the chat-templated text of the current prompt
        self.prefix: _PrefixCache | None = None
        # System prompt -> its prefix cache, newest last: FastVLM's DIRECTOR prefix is
        # prefilled once per prompt and its KV cache reused for every frame.
        self._prompts: OrderedDict = OrderedDict()
        self.prompt_positions = 0  # positions run by use_prompt (prefixes and contexts)
        self.use_prompt(Prompt(system_prompt, instruction))

    def use_prompt(self, prompt: Prompt) -> float:
        """Make ``prompt`` current: its system prompt (before the image) prefilled unless
        it is kept, its context (the text before the image, new every frame where it
        holds {previous}) prefilled on top unless it is already there, the instruction
        after the image prefilled with each frame. Returns the seconds spent prefilling
        (see Engine.use_prompt)."""
        if prompt == self.current:
            return 0.0
        t0 = time.perf_counter()
        messages = [{"role": "system", "content": prompt.system},
                    {"role": "user", "content": prompt.instruction}]
        templated = self._template(self.processor, self.model.config, messages, num_images=1)
        marker = getattr(self.processor, "image_token", None)
        lead = prompt.context + "\n" if prompt.context else ""
        if lead and marker and templated.count(marker) == 1:
            templated = templated.replace(marker, lead + marker, 1)  # before the image
        self.prompt = templated
        same_system = self.current is not None and prompt.system == self.current.system
        self.current = prompt
        ran = 0
        if not same_system:
            prefix = self._prompts.get(prompt.system)
            if prefix is None and self._use_prefix:
                prefix = _PrefixCache.build(self, lead)
                if prefix is not None:
                    ran += prefix.base
                    self._prompts[prompt.system] = prefix
                    while len(self._prompts) > PROMPTS_KEPT:
                        self._prompts.popitem(last=False)
            if prefix is not None:
                self._prompts.move_to_end(prompt.system)
            self.prefix = prefix
        if self.prefix is not None:
            self.prefix.set_after(self.prompt)
            ran += self.prefix.set_context(lead)
        self.prompt_positions += ran
        return time.perf_counter() - t0 if ran else 0.0

    def encode(self, text: str) -> list[int]:
        """Token ids of a piece of the templated prompt (no special tokens added)."""
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    @property
    def supports_constraint(self) -> bool:
        return self.prefix is not None

    def constrain(self, director) -> None:
        """Decode only answers that DIRECTOR.md's grammar allows (see pete_osc.engines.constrain);
        FastVLM (the prefix-cached path) only."""
        from .constrain import Constraint

        if self.prefix is None:
            raise PeteError(f"--constrain on: not available for {self.model_id} in the mlx "
                            "engine (FastVLM only); use --constrain off")
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        vocab = self.model.config.text_config.vocab_size
        self.constraint = Constraint(director, tokenizer, vocab)

    def batch(self, slots: int):
        """Several sources' frames decoded together (see pete_osc.engines.mlx_rows)."""
        from .mlx_rows import open_batch

        return open_batch(self, slots)

    warms_up = True

    def warm_up(self) -> float:
        """Run one throw-away frame so the first frame of the show is not the slow one
        (MLX compiles kernels on first use). Returns the seconds it took."""
        t0 = time.perf_counter()
        blank = np.zeros((self.settings.size, self.settings.size, 3), np.uint8)
        if self.prefix is not None:
            for _ in self.prefix.stream(blank, max_tokens=2):
                pass
        else:
            for _ in self._generate(blank, max_tokens=1, cache=None):
                pass
        return time.perf_counter() - t0

    def stream(self, image_rgb: np.ndarray, prompt: Prompt | None = None) -> Iterator[Token]:
        """Stream the answer for one square RGB frame (see Engine.stream)."""
        # The frame starts now: a context not prefilled before it is prefilled on its time.
        started, ran = time.perf_counter(), self.prompt_positions
        prompt_s = self.use_prompt(prompt) if prompt is not None else None
        self.aborted.clear()
        if self.prefix is not None:
            return self.prefix.stream(image_rgb, self.settings.max_tokens, started,
                                      self.prompt_positions - ran, prompt_s)
        return self._stream_generic(image_rgb, prompt_s)

    def _stream_generic(self, image_rgb: np.ndarray, prompt_s: float | None) -> Iterator[Token]:
        """Any mlx-vlm model, through ``mlx_vlm.stream_generate`` (whole prompt per frame)."""
        from mlx_vlm.models.cache import make_prompt_cache

        cache = make_prompt_cache(self.model.language_model)
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        decoder = IncrementalDecoder(
            lambda ids: tokenizer.decode(ids, skip_special_tokens=True))
        started = time.perf_counter()
        index = 0
        prefill = None
        for result in self._generate(image_rgb, self.settings.max_tokens, cache):
            now = time.perf_counter()
            if prefill is None:
                # The cache now holds the prompt: text plus the image's tokens.
                prefill = Prefill(started, _cache_len(cache), _cache_len(cache), None, prompt_s)
            if result.finish_reason is not None:
                # The closing record repeats the last token; it only carries the reason.
                yield Token(decoder.flush(), index, now, result.finish_reason, prefill)
                return
            if result.token is not None:
                yield Token(decoder.add(result.token), index, now, None, prefill)
                index += 1
            if self.aborted.is_set():
                yield Token(decoder.flush(), index, now, "abort", prefill)
                return

    def _generate(self, image_rgb: np.ndarray, max_tokens: int, cache):
        from PIL import Image

        kwargs = {"max_tokens": max_tokens, "temperature": self.settings.temperature}
        if cache is not None:
            kwargs["prompt_cache"] = cache
        return self._mlx_vlm.stream_generate(
            self.model, self.processor, self.prompt, image=[Image.fromarray(image_rgb)], **kwargs
        )

    def close(self) -> None:
        self.model = None
        self.processor = None


def _upcast_on_cpu(model) -> None:
    """On MLX's CPU backend half precision is emulated: fp32 runs FastViTHD 1.7x faster
    (1.26 s against 2.13 s per 64 px frame on 2 x86 cores). Metal keeps the checkpoint's
    dtype."""
    import mlx.core as mx

    if mx.default_device() == mx.cpu:
        model.set_dtype(mx.float32)


def _cache_len(cache) -> int | None:
    try:
        return int(cache[0].offset)
    except (AttributeError, IndexError, TypeError):
        return None


def _load(mlx_vlm, model: str, path: str | None = None):
    """``mlx_vlm.load`` with one-line errors that name the model and the working ids."""
    source = model_source(path or model)
    try:
        return mlx_vlm.load(source)
    except Exception as exc:  # hub errors, missing files, weight mismatches
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, KeyError):
            reason = f"weights do not match mlx-vlm's model (missing {reason})"
        raise PeteError(
            f"model {model} could not be loaded: {type(exc).__name__}: {reason[:200]}. "
            f"Ids known to work: {', '.join(KNOWN_GOOD)}. Offline? Run ./install.sh once "
            "online, or pass --model with a local folder"
        ) from None


def _set_input_size(processor, size: int) -> bool:
    """Make FastVLM's processor keep the frame at ``size`` instead of scaling it to 1024.

    Other models' processors have sizes their encoders need; they are left alone (the
    frame is still sent at ``size``). Returns True where the size was set.
    """
    image_processor = getattr(processor, "image_processor", None)
    if type(image_processor).__name__ != "FastVLMImageProcessor":
        log.info("model's image processor %s keeps its own input size",
                 type(image_processor).__name__)
        return False
    image_processor.size = {"shortest_edge": size}
    image_processor.crop_size = {"height": size, "width": size}
    return True


class _PrefixCache:
    """FastVLM on MLX with the DIRECTOR prefix prefilled once.

    mlx-vlm's own prompt cache reuses a prefix only when what follows it is text, and the
    image comes after the system prompt, so every frame would prefill the whole DIRECTOR
    text again (for a 600-token prompt that costs more than the image). Here the tokens
    before the image run through the language model once, at load; each frame trims the
    KV cache back to them and prefills only the image and the instruction, then decodes
    with the shared loop (pete_osc.engines.decode), this cache supplying the model calls.
    """

    def __init__(self, engine: "MlxEngine", before: list[int], after: list[int]):
        import mlx.core as mx
        from mlx_vlm.models.cache import make_prompt_cache

        self.engine = engine
        self.model = engine.model
        self.image_token = self.model.config.image_token_index
        self.after = mx.array([[self.image_token] + after])
        self.cache = make_prompt_cache(self.model.language_model)
        self.model.language_model(mx.array([before]), cache=self.cache)
        mx.eval([c.state for c in self.cache])
        self.base = self.cache[0].offset  # the system prompt's positions
        self.context: list[int] = []  # the context's token ids, on top of them
        self.length = self.base  # what each frame keeps: the system prompt and the context
        tokenizer = getattr(engine.processor, "tokenizer", engine.processor)
        self.decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        eos = getattr(tokenizer, "eos_token_id", None)
        config_eos = getattr(self.model.config, "eos_token_id", None)
        self.eos = {t for t in ([eos] + (config_eos if isinstance(config_eos, list) else [config_eos]))
                    if t is not None}

    @classmethod
    def build(cls, engine: "MlxEngine", lead: str = "") -> "_PrefixCache | None":
        """A prefix cache for FastVLM-like models (an ``<image>`` placeholder in the prompt
        that the processor turns into one image token), else None. ``lead`` is the
        context's text just before the image, left for :meth:`set_context`."""
        processor = engine.processor
        marker = getattr(processor, "image_token", None)
        if marker is None or engine.prompt.count(marker) != 1:
            return None
        before, after = engine.prompt.split(marker)
        before = before[:len(before) - len(lead)]
        return cls(engine, engine.encode(before), engine.encode(after))

    def set_context(self, lead: str) -> int:
        """The context's text (before the image) run on top of the system prompt, unless
        it is there already; the positions that took."""
        import mlx.core as mx

        ids = self.engine.encode(lead)
        if ids == self.context:
            return 0
        for c in self.cache:
            c.trim(c.offset - self.base)
        if ids:
            self.model.language_model(mx.array([ids]), cache=self.cache)
            mx.eval([c.state for c in self.cache])
        self.context = ids
        self.length = self.cache[0].offset
        return len(ids)

    def set_after(self, templated: str) -> None:
        """The tokens after the image (the instruction) for the templated prompt."""
        import mlx.core as mx

        after = templated.split(self.engine.processor.image_token, 1)[1]
        self.after = mx.array([[self.image_token] + self.engine.encode(after)])

    def stream(self, image_rgb: np.ndarray, max_tokens: int, started: float | None = None,
               prefilled: int = 0, prompt_s: float | None = None) -> Iterator[Token]:
        import mlx.core as mx
        from PIL import Image

        engine = self.engine
        constraint = engine.constraint
        jump = constraint is not None and engine.jump_forward
        eos = self.eos | ({constraint.eos} if constraint is not None else set())
        decoder = IncrementalDecoder(self.decode)
        started = started or time.perf_counter()
        if constraint is not None:
            constraint.reset()
        # The answer's forced start (the first key) is prefilled with the frame.
        start = constraint.forced()[:max_tokens - 1] if jump else []
        for c in self.cache:
            c.trim(c.offset - self.length)
        kept = self.cache[0].offset
        pixels = engine.processor.image_processor(images=[Image.fromarray(image_rgb)],
                                                  return_tensors=None)["pixel_values"]
        pixels = mx.array(np.asarray(pixels))
        ids = self.after if not start else mx.concatenate([self.after, mx.array([start])], axis=1)
        embeds = self.model.get_input_embeddings(ids, pixels).inputs_embeds
        logits = self.model.language_model(ids, cache=self.cache,
                                           inputs_embeds=embeds).logits[:, -1, :]
        prefill = Prefill(started, self.cache[0].offset - len(start),  # prefix, image, instruction
                          self.cache[0].offset - kept + prefilled, None, prompt_s)
        yield from decode(self, self._choose(logits), start=start, max_tokens=max_tokens,
                          eos=eos, constraint=constraint, jump=jump, decoder=decoder,
                          prefill=prefill, stop=engine.aborted)

    # ---- the model calls the decode loop makes (see pete_osc.engines.decode.Steps) -------
    @property
    def ahead(self) -> bool:
        # Without jump-forward a step needs nothing but the token: it is queued on the
        # lazy token before the token is read (with forced text to run along, the step
        # waits for the token: the grammar needs it first).
        return not (self.engine.constraint is not None and self.engine.jump_forward)

    def run(self, ids):
        import mlx.core as mx

        ids = ids[None] if isinstance(ids, mx.array) else mx.array([ids])
        logits = self.model.language_model(ids, cache=self.cache).logits[:, -1, :]
        mx.async_eval(logits)
        return logits

    def read(self, token) -> int:
        import mlx.core as mx

        mx.eval(token)  # mx.eval lets go of the GIL while it computes (a stop can land)
        return token.item()

    def choose(self, logits):
        return self._choose(logits)

    def _choose(self, logits):
        import mlx.core as mx

        if self.engine.constraint is not None:
            allowed = mx.array(self.engine.constraint.allowed())
            logits = mx.where(allowed[: logits.shape[-1]], logits, -mx.inf)
        temperature = self.engine.settings.temperature
        if temperature <= 0:
            token = mx.argmax(logits, axis=-1)
        else:
            token = mx.random.categorical(logits * (1.0 / temperature))
        mx.async_eval(token)
        return token

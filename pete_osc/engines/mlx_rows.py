"""The mlx engine's model calls for a batch (pete_osc.engines.batch): the same design as
the torch engine's (pete_osc.engines.torch_rows), in MLX.

The DIRECTOR prefix is prefilled once by the engine's prefix cache and its keys and values
are read by every row from that one copy; each row's tail (its context, the image, the
instruction and the answer so far) lives in a slot of a buffer per layer. Each layer calls
mlx-vlm's own modules (norms, projections, RoPE, MLP), so a quantized model serves the
batch as it serves one frame; attention is ``mx.fast.scaled_dot_product_attention`` over
the shared prefix and the row's tail, with a mask per row.
"""

from __future__ import annotations

import time

import numpy as np

from .batch import TAIL_HEADROOM, Batch, Slots
from .constrain import fill_rows


def open_batch(engine, slots: int):
    """The mlx engine's :class:`~pete_osc.engines.batch.Batch` of ``slots`` rows (FastVLM's
    prefix-cached path only; None for other models)."""

    if engine.prefix is None:
        return None
    def parts(prompt):
        return _split(engine, prompt)

    rows = MlxRows(engine, slots)
    rows.use_system(engine.current.system)
    return Batch(engine, rows, parts)


def _split(engine, prompt) -> tuple[list[int], list[int], list[int]]:
    """The prompt's token ids as the engine's prefix cache has them: the system prompt
    (and the user turn's start), the context, and what follows the image."""
    messages = [{"role": "system", "content": prompt.system},
                {"role": "user", "content": prompt.instruction}]
    templated = engine._template(engine.processor, engine.model.config, messages, num_images=1)
    before, after = templated.split(engine.processor.image_token, 1)
    lead = prompt.context + "\n" if prompt.context else ""
    return engine.encode(before), engine.encode(lead), engine.encode(after)


class MlxRows(Slots):
    """See the module docstring. ``slots``: how many rows can run at once."""

    def __init__(self, engine, slots: int):
        import mlx.core as mx

        self.mx = mx
        self.engine = engine
        self.model = engine.model
        self.lm = self.model.language_model
        self.layers = list(self.lm.model.layers)
        attn = self.layers[0].self_attn
        self.heads, self.kv_heads, self.scale = attn.n_heads, attn.n_kv_heads, attn.scale
        Slots.__init__(self, slots)
        self.image_tokens = (engine.settings.size // 64) ** 2
        self.tokenizer = getattr(engine.processor, "tokenizer", engine.processor)
        self.k: list = []
        self.v: list = []
        self.system = None
        self.prefix_len = 0
        self.runs = self.rows_run = self.prefix_reads = 0

    @property
    def eos(self) -> set[int]:
        constraint = self.engine.constraint
        return self.engine.prefix.eos | ({constraint.eos} if constraint is not None else set())

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def use_system(self, system: str) -> None:
        """The DIRECTOR prefix's keys and values for ``system``, read once for every row."""
        if system == self.system:
            return
        engine = self.engine
        if engine.current is None or engine.current.system != system:
            from .base import Prompt

            engine.use_prompt(Prompt(system, engine.current.instruction if engine.current else ""))
        cache = engine.prefix.cache
        n = engine.prefix.base
        self.pk = [c.keys[0, :, :n] for c in cache]
        self.pv = [c.values[0, :, :n] for c in cache]
        self.mx.eval(self.pk, self.pv)
        self.prefix_len, self.system = n, system
        self.prefix_reads += 1

    def _grow(self, tail: int) -> None:
        mx = self.mx
        d = self.pk[0].shape[-1]
        dtype = self.pk[0].dtype
        shape = (self.slots, self.kv_heads, tail, d)
        k, v = [], []
        for n in range(len(self.layers)):
            for old, out in ((self.k, k), (self.v, v)):
                new = mx.zeros(shape, dtype=dtype)
                if old:
                    new[:, :, : old[n].shape[2]] = old[n]
                out.append(new)
        self.k, self.v, self.tail = k, v, tail

    def prefill(self, rows):
        """As TorchRows.prefill: the frames through the vision tower in one call, every
        joining row's tail in one call."""
        mx, engine = self.mx, self.engine
        from PIL import Image

        t0 = time.perf_counter()
        pixels = [engine.processor.image_processor(images=[Image.fromarray(r[1])],
                                                   return_tensors=None)["pixel_values"]
                  for r in rows]
        pixels = mx.array(np.concatenate([np.asarray(p) for p in pixels]))
        model = self.model
        dtype = model.vision_tower.vision_model.patch_embed.blocks[0].reparam_conv.weight.dtype
        _, features, _ = model.vision_tower(pixels.astype(dtype).transpose(0, 2, 3, 1))
        features = model.mm_projector(features.reshape(features.shape[0], -1, features.shape[-1]))
        mx.eval(features)
        vision = time.perf_counter() - t0
        embed = self.lm.model.embed_tokens
        parts = []
        for i, (_, _, context, after, start) in enumerate(rows):
            pieces = ([embed(mx.array(context))] if context else []) + [features[i]]
            if after or start:
                pieces.append(embed(mx.array(after + start)))
            parts.append(mx.concatenate(pieces).astype(features.dtype))
        counts = [p.shape[0] for p in parts]
        width = max(counts)
        embeds = mx.stack([mx.pad(p, [(0, width - p.shape[0]), (0, 0)]) for p in parts])
        return self._forward([r[0] for r in rows], embeds, counts), vision, counts

    def run(self, slots: list[int], ids: list[list[int]]):
        mx = self.mx
        width = max(len(x) for x in ids)
        padded = [x + [x[-1]] * (width - len(x)) for x in ids]
        return self._forward(slots, self.lm.model.embed_tokens(mx.array(padded)),
                             [len(x) for x in ids])

    def _forward(self, slots, x, counts):
        mx = self.mx
        rows, width = x.shape[:2]
        need = max(self.length[s] for s in slots) + width
        if need > self.tail:
            self._grow(need + TAIL_HEADROOM)
        starts = [self.length[s] for s in slots]
        idx = mx.array(slots)
        # Which keys each query sees: the whole prefix, and its own tail up to itself.
        tail_pos = mx.array(starts)[:, None] + mx.arange(width)[None]  # (rows, width)
        seen = mx.arange(self.tail)[None, None] <= tail_pos[:, :, None]
        seen = mx.concatenate([mx.ones((rows, width, self.prefix_len), dtype=mx.bool_), seen],
                              axis=-1)[:, None]
        mask = mx.where(seen, 0.0, -mx.inf).astype(x.dtype)
        for n, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).reshape(rows, width, self.heads, -1).transpose(0, 2, 1, 3)
            k = attn.k_proj(h).reshape(rows, width, self.kv_heads, -1).transpose(0, 2, 1, 3)
            v = attn.v_proj(h).reshape(rows, width, self.kv_heads, -1).transpose(0, 2, 1, 3)
            q = mx.concatenate([attn.rope(q[b:b + 1], offset=self.prefix_len + s)
                                for b, s in enumerate(starts)])
            k = mx.concatenate([attn.rope(k[b:b + 1], offset=self.prefix_len + s)
                                for b, s in enumerate(starts)])
            kc, vc = self.k[n], self.v[n]
            for b, (slot, s) in enumerate(zip(slots, starts)):
                kc[slot, :, s:s + width] = k[b]
                vc[slot, :, s:s + width] = v[b]
            keys = mx.concatenate([mx.broadcast_to(self.pk[n][None], (rows, *self.pk[n].shape)),
                                   kc[idx]], axis=2)
            values = mx.concatenate([mx.broadcast_to(self.pv[n][None], (rows, *self.pv[n].shape)),
                                     vc[idx]], axis=2)
            out = mx.fast.scaled_dot_product_attention(q, keys.astype(q.dtype),
                                                       values.astype(q.dtype),
                                                       scale=self.scale, mask=mask)
            x = x + attn.o_proj(out.transpose(0, 2, 1, 3).reshape(rows, width, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        last = x[mx.arange(rows), mx.array([c - 1 for c in counts])]
        last = self.lm.model.norm(last)
        if self.lm.config.tie_word_embeddings:
            logits = self.lm.model.embed_tokens.as_linear(last)
        else:
            logits = self.lm.lm_head(last)
        mx.eval(logits, self.k, self.v)
        for s, c in zip(slots, counts):
            self.length[s] += c
        self.runs += 1
        self.rows_run += len(slots)
        return logits

    def choose(self, logits, constraints: list) -> list[int]:
        mx = self.mx
        first = next((c for c in constraints if c is not None), None)
        if first is not None:
            bits = np.full((len(constraints), first.words), -1, np.int32)
            fill_rows(constraints, bits.ctypes.data, first.words * 4)
            vocab = min(first.vocab_size, logits.shape[-1])
            allowed = np.ones((len(constraints), logits.shape[-1]), bool)
            allowed[:, :vocab] = np.unpackbits(bits.view(np.uint8), axis=1,
                                               bitorder="little")[:, :vocab]
            logits = mx.where(mx.array(allowed), logits, -mx.inf)
        temperature = self.engine.settings.temperature
        if temperature <= 0:
            chosen = mx.argmax(logits, axis=-1)
        else:
            chosen = mx.random.categorical(logits * (1.0 / temperature))
        return chosen.tolist()

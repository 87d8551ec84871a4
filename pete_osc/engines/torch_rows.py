"""The torch engine's model calls for a batch (pete_osc.engines.batch): FastVLM's language
model run over several rows at once, each row a frame with its own positions, its own
KV cache rows and its own grammar mask.

The DIRECTOR prefix (the system prompt and the start of the user turn, the same for every
source) is run through the model once, by the engine's own prefix cache, and its keys and
values are read by every row from that one copy: attention is computed against the shared
prefix and against the row's own tail (its context, the image, the instruction and the
answer so far) and the two are softmaxed together, so no row holds a copy of the prefix.
A row's tail lives in a slot of a fixed buffer per layer; a new frame takes a free slot and
is prefilled there, a finished one frees it (continuous batching).

Each layer calls the model's own modules (norms, projections, MLP), so int8 weights on the
CPU (pete_osc.engines.int8) serve the batch too; the rest is a handful of plain torch ops
written so that every shape is fixed for a row-count bucket: on CUDA the decode step of
each bucket (1, 2, 4, 8, 16 rows) is one CUDA graph, recorded the first time it is needed
(:meth:`warm_up` records them at start).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from .batch import TAIL_HEADROOM, Batch, Slots
from .constrain import fill_rows
from .torch_setup import record, split_prompt

log = logging.getLogger(__name__)

# Row counts with their own CUDA graph: a batch of 3 runs in the graph for 4 (one idle row).
BUCKETS = (1, 2, 4, 8, 16)
# Tokens per row a graph takes: a chosen token, or one and the grammar's forced text after
# it, or a joining frame's prefill (padded up to the next width; longer runs as it is).
WIDTHS = (1, 4, 8, 16, 32, 64)


def open_batch(engine, slots: int):
    """The torch engine's :class:`~pete_osc.engines.batch.Batch` of ``slots`` rows (on
    CUDA its decode graphs are recorded now, not on stage)."""
    def parts(prompt):
        return split_prompt(engine.tokenizer, prompt.system, prompt.instruction,
                            prompt.context)

    rows = TorchRows(engine, slots)
    rows.use_system(engine.prompt.system)
    rows.warm_up()
    return Batch(engine, rows, parts)


class TorchRows(Slots):
    """See the module docstring. ``slots``: how many rows can run at once."""

    def __init__(self, engine, slots: int):
        torch = self.torch = engine.torch
        self.engine = engine
        model = engine.model
        self.lm = getattr(model.model, "language_model", None) or model.language_model
        self.head = model.get_output_embeddings()
        config = self.lm.config
        self.layers = list(self.lm.layers)[: config.num_hidden_layers]
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.scale = attn.scaling
        self.hidden = config.hidden_size
        self.device, self.dtype = engine.device, engine.dtype
        Slots.__init__(self, slots)
        self.image_tokens = engine.image_tokens
        self.k: list = []
        self.v: list = []
        self.system = None  # the system prompt whose prefix the rows read
        self.graphs: dict[tuple, tuple] = {}  # (rows, width) -> (graph, inputs, logits)
        self._vision_graphs: dict | None = {}  # frames -> (graph, pixels, features)
        self.graph = engine.device.type == "cuda" and engine.fast
        # Steps padded to the buckets: on CUDA each bucket is a recorded graph; elsewhere
        # (tests) the same padded inputs run as they are.
        self.bucketed = self.graph
        self.runs = 0  # model calls (prefills and steps)
        self.rows_run = 0  # rows those calls ran
        self.prefix_reads = 0  # times the prefix's keys and values were taken from the engine
        self._bitmask = None  # (slots, words of the grammar's mask), made at the first use
        self._bit = torch.arange(32, dtype=torch.int32, device=self.device)
        self.fused = None  # the fused kernels (engines.fused_rows) where the engine runs its own
        if engine._fused is not None:
            from .fused_rows import FusedRows

            try:
                self.fused = FusedRows(self, engine._fused)
            except ValueError as exc:
                log.info("batch steps as plain torch ops (%s)", exc)

    @property
    def eos(self) -> set[int]:
        return self.engine.eos

    def decode(self, ids: list[int]) -> str:
        return self.engine.tokenizer.decode(ids, skip_special_tokens=True)

    # ---- the shared prefix and the slots -----------------------------------------------
    def use_system(self, system: str) -> None:
        """Read the DIRECTOR prefix's keys and values for ``system`` (prefilled by the
        engine's prefix cache if not yet) once; every row reads them from here."""
        if system == self.system:
            return
        engine, torch = self.engine, self.torch
        prompt = engine.prompt
        if prompt is None or prompt.system != system:
            from .base import Prompt

            engine.use_prompt(Prompt(system, prompt.instruction if prompt else ""))
        n = engine.system_len
        layers = engine.cache.layers
        with torch.inference_mode():
            self.pk = [layer.keys[0, :, :n].clone() for layer in layers]
            self.pv = [layer.values[0, :, :n].clone() for layer in layers]
        self.prefix_len = n
        self.system = system
        self.prefix_reads += 1
        self.graphs.clear()

    def _grow(self, tail: int) -> None:
        torch = self.torch
        shape = (self.slots, self.kv_heads, tail, self.head_dim)
        with torch.inference_mode():
            k = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
            v = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
            for old, new in zip(self.k + self.v, k + v):
                new[:, :, : old.shape[2]] = old
        self.k, self.v, self.tail = k, v, tail
        self.graphs.clear()  # (they hold the old buffers' addresses)

    # ---- model calls -------------------------------------------------------------------
    def prefill(self, rows: list[tuple[int, np.ndarray, list[int], list[int], list[int]]]):
        """Prefill joining rows, each ``(slot, image, context ids, instruction ids, start
        ids)``: the images through the vision tower together, then every row's tail in
        one call. Returns (logits per row, seconds in the vision tower, positions per row)."""
        torch, engine = self.torch, self.engine
        t0 = time.perf_counter()
        with torch.inference_mode():
            pixels = torch.from_numpy(np.stack([np.ascontiguousarray(r[1]) for r in rows]))
            pixels = pixels.to(self.device).permute(0, 3, 1, 2).to(self.dtype) / 255.0
            features = self._vision(pixels)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            vision = time.perf_counter() - t0
            embed = engine.model.get_input_embeddings()
            parts = []
            for (_, _, context, suffix, start), image in zip(rows, features):
                ids = lambda xs: torch.tensor(xs, dtype=torch.long, device=self.device)  # noqa: E731
                parts.append(torch.cat([embed(ids(context)), image.to(self.dtype),
                                        embed(ids(suffix + start))]))
            counts = [p.shape[0] for p in parts]
            width = max(counts)
            embeds = torch.zeros((len(rows), width, parts[0].shape[1]), dtype=self.dtype,
                                 device=self.device)
            for i, p in enumerate(parts):
                embeds[i, : p.shape[0]] = p
            logits = self._forward([r[0] for r in rows], embeds, counts)
        return logits, vision, counts

    def _vision(self, pixels):
        """(frames, image tokens, hidden): one call for all the frames that join (on
        CUDA a recorded graph per count of frames, see BUCKETS)."""
        engine = self.engine
        if self.graph and self._vision_graphs is not None:
            try:
                return self._vision_replay(pixels)
            except Exception as exc:  # (a tower that cannot be recorded: one frame a call)
                log.warning("the vision tower could not run in one recorded call for "
                            "several frames (%s: %s); each frame runs on its own",
                            type(exc).__name__, exc)
                self._vision_graphs = None
        if engine.fast:  # the engine's CUDA graph is for one frame: one replay each
            # (copied out: the next replay writes over the graph's output)
            return [engine._vision(p[None])[0].clone() for p in pixels]
        return list(self._encode(pixels))

    def _encode(self, pixels):
        features = self.engine.model.model.get_image_features(pixel_values=pixels).pooler_output
        if isinstance(features, (list, tuple)):
            features = self.torch.stack([f.reshape(-1, f.shape[-1]) for f in features])
        return features

    def _vision_replay(self, pixels):
        torch = self.torch
        n = pixels.shape[0]
        bucket = next((b for b in BUCKETS if b >= n), n)
        if bucket not in self._vision_graphs:
            buffer = torch.zeros((bucket, *pixels.shape[1:]), dtype=pixels.dtype,
                                 device=self.device)
            graph, out = record(self.torch, lambda: self._encode(buffer))
            self._vision_graphs[bucket] = (graph, buffer, out)
        graph, buffer, out = self._vision_graphs[bucket]
        buffer[:n] = pixels
        buffer[n:] = pixels[:1]
        graph.replay()
        return list(out[:n])

    def run(self, slots: list[int], ids: list[list[int]]):
        """Run each row's ids (a chosen token and the grammar's forced text) at its next
        positions, all rows in one call; the logits after each row's last id."""
        torch = self.torch
        with torch.inference_mode():
            width = max(len(x) for x in ids)
            padded = [x + [x[-1]] * (width - len(x)) for x in ids]
            embeds = self.engine.model.get_input_embeddings()(
                torch.tensor(padded, dtype=torch.long, device=self.device))
            return self._forward(slots, embeds, [len(x) for x in ids])

    def _forward(self, slots: list[int], embeds, counts: list[int]):
        """Rows ``slots`` take ``embeds`` (rows, width, hidden) at their next positions,
        ``counts`` of each row real (the rest is padding, written past the row's end and
        overwritten by its next call); the logits after each row's last real position.
        Bucketed (CUDA): padded to a recorded graph's rows and width, replayed."""
        torch = self.torch
        n, width = embeds.shape[:2]
        bucket = None
        if self.bucketed and width <= WIDTHS[-1]:
            bucket = (next((b for b in BUCKETS if b >= n), n), next(w for w in WIDTHS if w >= width))
            width = bucket[1]
        if max(self.length[s] for s in slots) + width > self.tail:
            self._grow(max(self.length[s] for s in slots) + width + TAIL_HEADROOM)
        starts = [self.length[s] for s in slots]
        if bucket is None:
            meta = torch.tensor([slots, starts, [c - 1 for c in counts]], dtype=torch.long,
                                device=self.device)
            logits = self._layers(embeds, *meta)
        else:
            if bucket not in self.graphs:
                self._capture(*bucket)
            graph, (x, meta), out = self.graphs[bucket]
            # Idle rows repeat the first row (its slot, its positions, its values: the
            # same values written twice); only the real rows' logits are read.
            pad = bucket[0] - n
            meta.copy_(torch.tensor([slots + slots[:1] * pad, starts + starts[:1] * pad,
                                     [c - 1 for c in counts] + [counts[0] - 1] * pad]),
                       non_blocking=True)
            x[:n, : embeds.shape[1]] = embeds
            x[n:] = x[:1]
            if graph is None:
                logits = out()[:n]
            else:
                graph.replay()
                logits = out[:n]
        for s, c in zip(slots, counts):
            self.length[s] += c
        self.runs += 1
        self.rows_run += n
        return logits

    def _layers(self, x, idx, start, last):
        """The language model over the rows: every shape here depends only on the rows'
        count and width (for a CUDA graph); positions and slots come as tensors."""
        torch = self.torch
        rows, width = x.shape[:2]
        d, heads, kvh = self.head_dim, self.heads, self.kv_heads
        group = heads // kvh
        tail_pos = start[:, None] + torch.arange(width, device=self.device)  # (rows, width)
        cos, sin = self.lm.rotary_emb(x, tail_pos + self.prefix_len)
        cos, sin = cos[:, None], sin[:, None]
        keys = torch.arange(self.tail, device=self.device)
        hidden = torch.where(keys[None, None] <= tail_pos[:, :, None], 0.0, float("-inf"))
        hidden = hidden[:, None, None].to(torch.float32)  # (rows, 1, 1, width, tail)
        write_rows = idx[:, None].expand(rows, width)
        for n, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(rows, width, heads, d).transpose(1, 2)
            k = attn.k_proj(h).view(rows, width, kvh, d).transpose(1, 2)
            v = attn.v_proj(h).view(rows, width, kvh, d).transpose(1, 2)
            q, k = _rope(q, cos, sin), _rope(k, cos, sin)
            kc, vc = self.k[n], self.v[n]
            # (slot, head, position): each row writes its own positions
            kc[write_rows, :, tail_pos] = k.transpose(1, 2)
            vc[write_rows, :, tail_pos] = v.transpose(1, 2)
            kt, vt = kc.index_select(0, idx), vc.index_select(0, idx)
            qg = q.reshape(rows, kvh, group, width, d)
            sp = torch.einsum("bkgsd,kpd->bkgsp", qg, self.pk[n]).float()
            st = torch.einsum("bkgsd,bktd->bkgst", qg, kt).float() + hidden
            p = torch.softmax(torch.cat([sp, st], dim=-1) * self.scale, dim=-1).to(self.dtype)
            plen = sp.shape[-1]
            out = (torch.einsum("bkgsp,kpd->bkgsd", p[..., :plen], self.pv[n])
                   + torch.einsum("bkgst,bktd->bkgsd", p[..., plen:], vt))
            out = out.reshape(rows, heads, width, d).transpose(1, 2).reshape(rows, width, heads * d)
            x = x + attn.o_proj(out)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        x = x[torch.arange(rows, device=self.device), last]
        return self.head(self.lm.norm(x)).float()

    # ---- CUDA graphs, one per row-count bucket -----------------------------------------
    def _capture(self, rows: int, width: int) -> None:
        torch = self.torch
        x = torch.zeros((rows, width, self.hidden), dtype=self.dtype, device=self.device)
        meta = torch.zeros((3, rows), dtype=torch.long, device=self.device)  # slot, start, last
        meta[1].fill_(self.tail - width)  # (slot 0's last positions: junk, overwritten later)
        layers = self._layers
        if self.fused is not None and rows * width <= self.fused.max_tokens:
            layers = self.fused.forward
        body = lambda: layers(x, *meta)  # noqa: E731
        if not self.graph:
            self.graphs[(rows, width)] = (None, (x, meta), body)
            return
        graph, out = record(self.torch, body)
        self.graphs[(rows, width)] = (graph, (x, meta), out)

    def warm_up(self) -> None:
        """Record the CUDA graphs for every bucket up to the slots: the step's (a row
        count, and a width: 1 for a chosen token, more for the grammar's forced text and
        for the frames that join) and the vision tower's (a count of frames)."""
        if not self.graph:
            return
        if not self.k:  # the buffers for a frame of the current prompt, and room to spare
            self._grow(self.engine.max_len - self.prefix_len + TAIL_HEADROOM)
        torch, size = self.torch, self.engine.settings.size
        with torch.inference_mode():
            for rows in BUCKETS:
                for width in WIDTHS:
                    if (rows, width) not in self.graphs:
                        self._capture(rows, width)
                self._vision(torch.zeros((rows, 3, size, size), dtype=self.dtype,
                                         device=self.device))
                if rows >= self.slots:
                    break

    def choose(self, logits, constraints: list) -> list[int]:
        """Each row's next token (greedy or sampled), its grammar's mask applied."""
        torch = self.torch
        with torch.inference_mode():
            words = next((c.words for c in constraints if c is not None), 0)
            if words:
                rows = logits.shape[0]
                if self._bitmask is None or self._bitmask.shape != (self.slots, words):
                    self._bitmask = torch.full((self.slots, words), -1, dtype=torch.int32,
                                               pin_memory=self.device.type == "cuda")
                self._bitmask[:rows].fill_(-1)
                fill_rows(constraints, self._bitmask.data_ptr(), words * 4)
                bits = self._bitmask[:rows].to(self.device, non_blocking=True)
                allowed = ((bits[:, :, None] >> self._bit) & 1).view(rows, -1)[:, : logits.shape[-1]]
                logits = logits.masked_fill(allowed == 0, float("-inf"))
            temperature = self.engine.settings.temperature
            if temperature <= 0:
                chosen = logits.argmax(dim=-1)
            else:
                probs = torch.softmax(logits.float() / temperature, dim=-1)
                chosen = torch.multinomial(probs, 1)[:, 0]
            return chosen.tolist()


def _rope(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + _turned(x, half) * sin


def _turned(x, half):
    import torch

    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)

"""One decode step of FastVLM's language model (Qwen2) in a few fused Triton kernels.

At batch 1 a step reads every weight once (0.92 GiB) and does little else: its floor is
the memory bandwidth (0.33 ms on an H100). As transformers writes it, the step is ~470
small kernels whose launches cost more than the reading. Here each layer is five kernels
(a few more with other SHAPES), all shaped for one row of activations:

1. RMSNorm + the q/k/v projections (one stacked weight) + bias + RoPE, writing k and v
   straight into the KV cache at the position;
2. attention over the filled positions only, split across blocks (flash decoding);
3. the splits merged + the output projection + the residual add;
4. RMSNorm + gate and up projections + SiLU(gate) * up; then
5. the down projection + the residual add.

plus the embedding row before and RMSNorm + the head after; the step is one CUDA graph,
the position a device tensor (one graph serves every step). q/k/v and gate/up are
stacked once, the model's modules pointed at views of the stacks (no second copy).

Numerics follow transformers' bf16 path where it rounds (the norm's output, each
projection's output, the attention output); the sums are fp32. The logits are fp32.
"""

from __future__ import annotations

import math

import triton
import triton.language as tl

# (the batch's kernels that add a projection's K parts, and merge the attention's splits)
from .fused_rows import _add, _merge

SPLITS = 32  # the most attention blocks per head (each a contiguous part of the positions)
# Launch shapes (``bench/fused_decode.py --tune`` tries others): rows per program (of a
# head for q/k/v), attention blocks per head, the attention merged before o (1) or in each
# o program (0), down's K block and parts (>1: fp32 parts added by a second kernel), warps.
SHAPES = dict(qkv_rows=8, splits=8, o_rows=4, o_merged=0, gate_rows=16, down_rows=4,
              down_block=512, down_parts=1, qkv_warps=4, attend_warps=2, o_warps=4,
              gate_warps=4, down_warps=4)


@triton.jit
def _rms(x_ptr, ln_ptr, K: tl.constexpr, BLOCK: tl.constexpr, eps):
    """The RMS-normed row x * rstd * weight, rounded to bf16 where transformers rounds."""
    k = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + k, mask=k < K, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, 0) / K + eps)
    w = tl.load(ln_ptr + k, mask=k < K, other=0.0).to(tl.float32)
    xn = (x * rstd).to(x_ptr.dtype.element_ty).to(tl.float32)
    return (xn * w).to(x_ptr.dtype.element_ty).to(tl.float32)


@triton.jit
def _qkv_rope(x_ptr, ln_ptr, w_ptr, b_ptr, inv_freq_ptr, pos_ptr, q_ptr, k_cache, v_cache,
              max_len, eps, K: tl.constexpr, HEADS: tl.constexpr, KV_HEADS: tl.constexpr,
              D: tl.constexpr, ROWS: tl.constexpr, BLOCK_K: tl.constexpr):
    """Program (head, part): ROWS rows of the first half of the head and the ROWS rows
    that RoPE pairs them with in the second half."""
    head = tl.program_id(0)
    part = tl.program_id(1)
    HALF: tl.constexpr = D // 2
    k = tl.arange(0, BLOCK_K)
    xn = _rms(x_ptr, ln_ptr, K, BLOCK_K, eps)
    i = part * ROWS + tl.arange(0, ROWS)  # 0..HALF-1
    r1 = head * D + i
    r2 = r1 + HALF
    w1 = tl.load(w_ptr + r1[:, None] * K + k[None, :], mask=k[None, :] < K, other=0.0)
    w2 = tl.load(w_ptr + r2[:, None] * K + k[None, :], mask=k[None, :] < K, other=0.0)
    out_ty = x_ptr.dtype.element_ty
    y1 = (tl.sum(w1.to(tl.float32) * xn[None, :], 1)
          + tl.load(b_ptr + r1).to(tl.float32)).to(out_ty).to(tl.float32)
    y2 = (tl.sum(w2.to(tl.float32) * xn[None, :], 1)
          + tl.load(b_ptr + r2).to(tl.float32)).to(out_ty).to(tl.float32)
    pos = tl.load(pos_ptr)
    if head < HEADS + KV_HEADS:  # q and k turn with the position; v does not
        angle = pos.to(tl.float32) * tl.load(inv_freq_ptr + i)
        c = tl.cos(angle).to(out_ty).to(tl.float32)
        s = tl.sin(angle).to(out_ty).to(tl.float32)
        o1 = y1 * c - y2 * s
        o2 = y2 * c + y1 * s
    else:
        o1 = y1
        o2 = y2
    if head < HEADS:
        tl.store(q_ptr + head * D + i, o1.to(out_ty))
        tl.store(q_ptr + head * D + HALF + i, o2.to(out_ty))
    elif head < HEADS + KV_HEADS:
        at = (head - HEADS) * max_len * D + pos * D
        tl.store(k_cache + at + i, o1.to(out_ty))
        tl.store(k_cache + at + HALF + i, o2.to(out_ty))
    else:
        at = (head - HEADS - KV_HEADS) * max_len * D + pos * D
        tl.store(v_cache + at + i, o1.to(out_ty))
        tl.store(v_cache + at + HALF + i, o2.to(out_ty))


@triton.jit
def _attend(q_ptr, k_cache, v_cache, pos_ptr, m_ptr, l_ptr, acc_ptr, max_len, scale,
            GROUP: tl.constexpr, D: tl.constexpr, SPLIT: tl.constexpr, BLOCK_L: tl.constexpr):
    """Program (q head, split): its share of positions 0..pos, as a partial softmax (the
    running max, the sum and the weighted values), merged by :func:`_out_proj`."""
    head = tl.program_id(0)
    split = tl.program_id(1)
    kv = head // GROUP
    d = tl.arange(0, D)
    q = tl.load(q_ptr + head * D + d).to(tl.float32) * scale
    length = tl.load(pos_ptr) + 1
    chunk = tl.cdiv(tl.cdiv(length, SPLIT), BLOCK_L) * BLOCK_L
    start = split * chunk
    end = tl.minimum(start + chunk, length)
    m = tl.full((), -float("inf"), tl.float32)
    l = tl.zeros((), tl.float32)
    acc = tl.zeros((D,), tl.float32)
    base = kv * max_len * D
    for at in range(start, end, BLOCK_L):
        p = at + tl.arange(0, BLOCK_L)
        inside = p < end
        keys = tl.load(k_cache + base + p[:, None] * D + d[None, :], mask=inside[:, None], other=0.0)
        s = tl.sum(keys.to(tl.float32) * q[None, :], 1)
        s = tl.where(inside, s, -float("inf"))
        m_new = tl.maximum(m, tl.max(s, 0))
        alpha = tl.exp(m - m_new)
        w = tl.exp(s - m_new)
        values = tl.load(v_cache + base + p[:, None] * D + d[None, :], mask=inside[:, None], other=0.0)
        acc = acc * alpha + tl.sum(w[:, None] * values.to(tl.float32), 0)
        l = l * alpha + tl.sum(w, 0)
        m = m_new
    at = head * SPLIT + split
    tl.store(m_ptr + at, m)
    tl.store(l_ptr + at, l)
    tl.store(acc_ptr + at * D + d, acc)


@triton.jit
def _out_proj(m_ptr, l_ptr, acc_ptr, w_ptr, h_ptr, K: tl.constexpr, D: tl.constexpr,
              SPLIT: tl.constexpr, ROWS: tl.constexpr, BLOCK_K: tl.constexpr):
    """Rows of h += o_proj(attention): the attention splits merged first (every program
    merges them all: 14 heads x 8 splits, from L2), rounded to bf16 as transformers'."""
    row = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    k = tl.arange(0, BLOCK_K)
    inside = k < K
    head = k // D
    top = tl.full((BLOCK_K,), -float("inf"), tl.float32)
    for s in tl.static_range(SPLIT):
        top = tl.maximum(top, tl.load(m_ptr + head * SPLIT + s, mask=inside, other=0.0))
    total = tl.zeros((BLOCK_K,), tl.float32)
    mixed = tl.zeros((BLOCK_K,), tl.float32)
    for s in tl.static_range(SPLIT):
        ms = tl.load(m_ptr + head * SPLIT + s, mask=inside, other=0.0)
        weight = tl.where(ms == -float("inf"), 0.0, tl.exp(ms - top))
        total += weight * tl.load(l_ptr + head * SPLIT + s, mask=inside, other=0.0)
        mixed += weight * tl.load(acc_ptr + (head * SPLIT + s) * D + k % D, mask=inside, other=0.0)
    out_ty = h_ptr.dtype.element_ty
    a = tl.where(inside, mixed / total, 0.0).to(out_ty).to(tl.float32)
    w = tl.load(w_ptr + row[:, None] * K + k[None, :], mask=inside[None, :], other=0.0)
    y = tl.sum(w.to(tl.float32) * a[None, :], 1).to(out_ty)
    h = tl.load(h_ptr + row)
    tl.store(h_ptr + row, (h + y).to(out_ty))


@triton.jit
def _gate_up(h_ptr, ln_ptr, w_ptr, out_ptr, eps, K: tl.constexpr, N: tl.constexpr,
             ROWS: tl.constexpr, BLOCK_K: tl.constexpr):
    """Rows of SiLU(gate(norm(h))) * up(norm(h)); gate and up are one stacked weight."""
    row = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    k = tl.arange(0, BLOCK_K)
    xn = _rms(h_ptr, ln_ptr, K, BLOCK_K, eps)
    inside = k[None, :] < K
    wg = tl.load(w_ptr + row[:, None] * K + k[None, :], mask=inside, other=0.0)
    wu = tl.load(w_ptr + (row[:, None] + N) * K + k[None, :], mask=inside, other=0.0)
    out_ty = h_ptr.dtype.element_ty
    g = tl.sum(wg.to(tl.float32) * xn[None, :], 1).to(out_ty).to(tl.float32)
    u = tl.sum(wu.to(tl.float32) * xn[None, :], 1).to(out_ty).to(tl.float32)
    act = (g / (1.0 + tl.exp(-g))).to(out_ty).to(tl.float32)
    tl.store(out_ptr + row, (act * u).to(out_ty))


@triton.jit
def _down(x_ptr, w_ptr, h_ptr, K: tl.constexpr, ROWS: tl.constexpr, BLOCK_K: tl.constexpr):
    """Rows of h += down(x), the long rows read in blocks."""
    row = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    acc = tl.zeros((ROWS,), tl.float32)
    for at in tl.static_range(0, K, BLOCK_K):
        k = at + tl.arange(0, BLOCK_K)
        inside = k < K
        x = tl.load(x_ptr + k, mask=inside, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + row[:, None] * K + k[None, :], mask=inside[None, :], other=0.0)
        acc += tl.sum(w.to(tl.float32) * x[None, :], 1)
    out_ty = h_ptr.dtype.element_ty
    h = tl.load(h_ptr + row)
    tl.store(h_ptr + row, (h + acc.to(out_ty)).to(out_ty))


@triton.jit
def _down_part(x_ptr, w_ptr, part_ptr, K: tl.constexpr, N: tl.constexpr, ROWS: tl.constexpr,
               BLOCK_K: tl.constexpr, CHUNK: tl.constexpr):
    """Program (rows, part): down's sums over one part of K (fp32), added by _add."""
    row = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    part = tl.program_id(1)
    acc = tl.zeros((ROWS,), tl.float32)
    for at in tl.static_range(0, CHUNK, BLOCK_K):
        k = part * CHUNK + at + tl.arange(0, BLOCK_K)
        inside = (k < K) & (k < part * CHUNK + CHUNK)
        x = tl.load(x_ptr + k, mask=inside, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + row[:, None] * K + k[None, :], mask=inside[None, :], other=0.0)
        acc += tl.sum(w.to(tl.float32) * x[None, :], 1)
    tl.store(part_ptr + part * N + row, acc)


@triton.jit
def _head(h_ptr, ln_ptr, w_ptr, out_ptr, eps, K: tl.constexpr, N, ROWS: tl.constexpr,
          BLOCK_K: tl.constexpr):
    """Rows of the logits: the output projection of the final norm (fp32 out)."""
    row = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    k = tl.arange(0, BLOCK_K)
    xn = _rms(h_ptr, ln_ptr, K, BLOCK_K, eps)
    w = tl.load(w_ptr + row[:, None] * K + k[None, :],
                mask=(row[:, None] < N) & (k[None, :] < K), other=0.0)
    y = tl.sum(w.to(tl.float32) * xn[None, :], 1).to(h_ptr.dtype.element_ty)
    tl.store(out_ptr + row, y.to(tl.float32), mask=row < N)


class FusedDecoder:
    """The decode step of ``language`` (a transformers Qwen2Model) with ``head`` (its
    output projection) over a transformers StaticCache, as fused kernels in one CUDA
    graph. ``step(token, position)`` takes both as device tensors of one int64 each
    (copied into the graph's inputs) and returns the graph's logits tensor (1, vocab)."""

    def __init__(self, torch, language, head, graph: bool = True):
        self.torch = torch
        config = language.config
        self.hidden = config.hidden_size
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or self.hidden // self.heads
        self.inter = config.intermediate_size
        self.eps = config.rms_norm_eps
        self.vocab = head.weight.shape[0]
        d = self.head_dim
        if (d < 16 or d & (d - 1) or self.hidden % 4 or self.inter % 16
                or self.heads % self.kv_heads
                or getattr(language.rotary_emb, "attention_scaling", 1.0) != 1.0):
            raise ValueError("shapes the fused decode step is not written for")
        self.embed = language.embed_tokens.weight
        self.head = head.weight
        self.norm = language.norm.weight
        self.inv_freq = language.rotary_emb.inv_freq.float().contiguous()
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.layers = [self._stack(layer) for layer in language.layers]
        device, dtype = self.embed.device, self.embed.dtype
        # The graph's inputs (the token, its position), written from pinned host memory.
        self.inputs = torch.zeros(2, dtype=torch.long, device=device)
        self.token, self.pos = self.inputs[0:1], self.inputs[1:2]
        self._host = torch.zeros(2, dtype=torch.long, pin_memory=device.type == "cuda")
        self.h = torch.zeros(1, self.hidden, dtype=dtype, device=device)
        self.q = torch.zeros(self.heads * self.head_dim, dtype=dtype, device=device)
        self.m = torch.zeros(self.heads * SPLITS, dtype=torch.float32, device=device)
        self.l = torch.zeros_like(self.m)
        self.acc = torch.zeros(self.heads * SPLITS * self.head_dim, dtype=torch.float32, device=device)
        self.mlp = torch.zeros(self.inter, dtype=dtype, device=device)
        self.logits = torch.zeros(1, self.vocab, dtype=torch.float32, device=device)
        self.parts = torch.zeros(8 * self.hidden, dtype=torch.float32, device=device)
        self.block_k = triton.next_power_of_2(self.hidden)
        self.shapes = dict(SHAPES)
        self.use_graph = graph
        self.graph = None
        self.cache = None
        self.lengths = None

    def bind(self, cache) -> None:
        """Run over ``cache`` (a transformers StaticCache); on CUDA the step is captured
        as a graph for it. Its layers' write positions are set to the position after
        each step, where transformers' own next step (a forced run) writes."""
        if cache is self.cache:
            return
        self.cache = cache
        self.lengths = [layer.cumulative_length for layer in cache.layers]
        self.graph = None
        if self.use_graph:
            self._capture()

    def _stack(self, layer):
        """The layer's q/k/v and gate/up weights stacked, its modules pointed at views."""
        torch = self.torch
        attn, mlp = layer.self_attn, layer.mlp
        qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).contiguous()
        bias = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]).contiguous()
        gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).contiguous()
        at = 0
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            n = proj.weight.shape[0]
            proj.weight = torch.nn.Parameter(qkv[at:at + n], requires_grad=False)
            proj.bias = torch.nn.Parameter(bias[at:at + n], requires_grad=False)
            at += n
        mlp.gate_proj.weight = torch.nn.Parameter(gate_up[:self.inter], requires_grad=False)
        mlp.up_proj.weight = torch.nn.Parameter(gate_up[self.inter:], requires_grad=False)
        return (layer.input_layernorm.weight, qkv, bias, attn.o_proj.weight,
                layer.post_attention_layernorm.weight, gate_up, mlp.down_proj.weight)

    def _run(self) -> None:
        """The step's kernels, from self.token and self.pos to self.logits."""
        torch = self.torch
        H, D, K, KV = self.heads, self.head_dim, self.hidden, self.kv_heads
        torch.index_select(self.embed, 0, self.token, out=self.h)
        h, c = self.h, self.shapes
        rows, splits, parts = min(c["qkv_rows"], D // 2), c["splits"], c["down_parts"]
        chunk = triton.cdiv(triton.cdiv(self.inter, parts), 16) * 16  # (K of a down part)
        for (ln1, qkv, bias, wo, ln2, gate_up, down), layer in zip(self.layers, self.cache.layers):
            max_len = layer.keys.shape[2]
            _qkv_rope[(H + 2 * KV, D // 2 // rows)](
                h, ln1, qkv, bias, self.inv_freq, self.pos, self.q, layer.keys, layer.values,
                max_len, self.eps, K=K, HEADS=H, KV_HEADS=KV, D=D, ROWS=rows,
                BLOCK_K=self.block_k, num_warps=c["qkv_warps"])
            _attend[(H, splits)](
                self.q, layer.keys, layer.values, self.pos, self.m, self.l, self.acc, max_len,
                self.scale, GROUP=H // KV, D=D, SPLIT=splits, BLOCK_L=32,
                num_warps=c["attend_warps"])
            if c["o_merged"]:
                _merge[(1, H)](self.m, self.l, self.acc, self.q, HEADS=H, D=D, SPLIT=splits)
                _down[(K // c["o_rows"],)](self.q, wo, h, K=K, ROWS=c["o_rows"],
                                           BLOCK_K=self.block_k, num_warps=c["o_warps"])
            else:
                _out_proj[(K // c["o_rows"],)](
                    self.m, self.l, self.acc, wo, h, K=K, D=D, SPLIT=splits, ROWS=c["o_rows"],
                    BLOCK_K=self.block_k, num_warps=c["o_warps"])
            _gate_up[(self.inter // c["gate_rows"],)](
                h, ln2, gate_up, self.mlp, self.eps, K=K, N=self.inter, ROWS=c["gate_rows"],
                BLOCK_K=self.block_k, num_warps=c["gate_warps"])
            if parts == 1:
                _down[(K // c["down_rows"],)](self.mlp, down, h, K=self.inter,
                                              ROWS=c["down_rows"], BLOCK_K=c["down_block"],
                                              num_warps=c["down_warps"])
            else:
                _down_part[(K // c["down_rows"], parts)](
                    self.mlp, down, self.parts, K=self.inter, N=K, ROWS=c["down_rows"],
                    BLOCK_K=c["down_block"], CHUNK=chunk, num_warps=c["down_warps"])
                _add[(triton.cdiv(K, 256),)](self.parts, h, K, SPLITK=parts, TILE_N=K, BLOCK=256)
        _head[(triton.cdiv(self.vocab, 32),)](
            h, self.norm, self.head, self.logits, self.eps, K=K, N=self.vocab, ROWS=32,
            BLOCK_K=self.block_k, num_warps=4)
        # transformers' own steps (a forced run, the next frame) write from here on
        after = (self.pos + 1).view(())
        torch._foreach_copy_(self.lengths, [after] * len(self.lengths))

    def reshape(self, **shapes) -> None:
        """Other launch shapes (see SHAPES); on CUDA the step is captured again."""
        self.shapes.update(shapes)
        if self.graph is not None:
            self._capture()

    def _capture(self) -> None:
        torch = self.torch
        # The warm-up runs write their key and value at the cache's last position, which
        # no frame reads before writing it, and the write positions are put back after.
        kept = [length.clone() for length in self.lengths]
        self.pos.fill_(self.cache.layers[0].keys.shape[2] - 1)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # compile every kernel before capture
                self._run()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._run()
        torch._foreach_copy_(self.lengths, kept)

    def step(self, token: int, position: int):
        """The logits (1, vocab) after ``token`` at ``position``, whose key and value go
        into the cache there. The tensor is the graph's own: read it before the next step."""
        self._host[0], self._host[1] = token, position
        self.inputs.copy_(self._host, non_blocking=True)
        if self.graph is not None:
            self.graph.replay()
        else:
            self._run()
        return self.logits

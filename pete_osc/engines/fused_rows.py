"""A batch's model call (pete_osc.engines.torch_rows) in fused Triton kernels: up to 64
tokens (a batch's rows, each one chosen token, or a few rows with the grammar's forced
text) through FastVLM's language model, each weight read once for all of them.

At a few rows a step still reads every weight once and does little else, as the single
frame's step does (pete_osc.engines.fused): its cost is the memory, not the arithmetic.
Run as plain torch ops, the batch's step is ~40 kernels a layer, whose launches cost more
than the reading. Here each layer is five kernels, each taking every token at once:

1. RMSNorm + the q/k/v projections (one stacked weight) + bias + RoPE at each token's
   position, the keys and values written into each token's row slot;
2. attention per token and key/value head, over the shared DIRECTOR prefix and the row's
   own tail (one softmax over both), split across blocks (flash decoding);
3. the splits merged + the output projection + the residual add;
4. RMSNorm + gate and up projections + SiLU(gate) * up; then
5. the down projection + the residual add;

plus RMSNorm + the output projection for each row's last token. The tokens sit in one
tile of 16, 32 or 64 (``tl.dot`` on the tensor cores); each program reads its share of a
weight once and multiplies it with every token. The rows' slots and positions come from
device tensors, so one CUDA graph serves every step of its (rows, width) bucket.

Numerics follow transformers' bf16 path where it rounds (the norm's output, each
projection's output, the attention's weights and output); the sums are fp32.
"""

from __future__ import annotations

import triton
import triton.language as tl

MAX_TOKENS = 128  # more (several frames prefilled at once, 16 rows of 16): plain torch ops


@triton.jit
def _dot(a, b, FP32: tl.constexpr):
    if FP32:  # (fp32 models: exact products, as torch's matmul)
        return tl.dot(a, b, input_precision="ieee")
    return tl.dot(a, b)


@triton.jit
def _rstd(x_ptr, tok, live, eps, K: tl.constexpr, BK: tl.constexpr):
    """1 / RMS of each token's row of x (TILE,)."""
    total = tl.zeros((tok.shape[0],), tl.float32)
    for at in tl.static_range(0, K, BK):
        k = at + tl.arange(0, BK)
        x = tl.load(x_ptr + tok[:, None] * K + k[None, :], mask=live[:, None] & (k[None, :] < K),
                    other=0.0).to(tl.float32)
        total += tl.sum(x * x, 1)
    return 1.0 / tl.sqrt(total / K + eps)


@triton.jit
def _normed(x_ptr, ln_ptr, tok, live, rstd, k, K: tl.constexpr):
    """Columns ``k`` of the tokens' RMS-normed rows, rounded as transformers rounds."""
    x = tl.load(x_ptr + tok[:, None] * K + k[None, :], mask=live[:, None] & (k[None, :] < K),
                other=0.0).to(tl.float32)
    ty = x_ptr.dtype.element_ty
    w = tl.load(ln_ptr + k, mask=k < K, other=0.0).to(tl.float32)
    return ((x * rstd[:, None]).to(ty).to(tl.float32) * w[None, :]).to(ty)


@triton.jit
def _qkv(x_ptr, ln_ptr, w_ptr, b_ptr, inv_freq_ptr, meta_ptr, q_ptr, k_ptr, v_ptr, M, T, P, eps,
         K: tl.constexpr, HEADS: tl.constexpr, KV: tl.constexpr, D: tl.constexpr,
         PART: tl.constexpr, BK: tl.constexpr, TILE: tl.constexpr, FP32: tl.constexpr):
    """Program (head of q, k or v, part): PART columns of the head for every token, each
    with its RoPE partner (the column half a head away, read as a second product)."""
    head = tl.program_id(0)
    HALF: tl.constexpr = D // 2
    tok = tl.arange(0, TILE)
    live = tok < M
    d = tl.program_id(1) * PART + tl.arange(0, PART)
    partner = (d + HALF) % D
    rows, rows2 = head * D + d, head * D + partner
    rstd = _rstd(x_ptr, tok, live, eps, K, BK)
    acc = tl.zeros((TILE, PART), tl.float32)
    acc2 = tl.zeros((TILE, PART), tl.float32)
    for at in tl.static_range(0, K, BK):
        k = at + tl.arange(0, BK)
        xn = _normed(x_ptr, ln_ptr, tok, live, rstd, k, K)
        w = tl.load(w_ptr + rows[:, None] * K + k[None, :], mask=k[None, :] < K, other=0.0)
        w2 = tl.load(w_ptr + rows2[:, None] * K + k[None, :], mask=k[None, :] < K, other=0.0)
        acc += _dot(xn, tl.trans(w), FP32)
        acc2 += _dot(xn, tl.trans(w2), FP32)
    ty = x_ptr.dtype.element_ty
    y = (acc + tl.load(b_ptr + rows).to(tl.float32)[None, :]).to(ty).to(tl.float32)
    y2 = (acc2 + tl.load(b_ptr + rows2).to(tl.float32)[None, :]).to(ty).to(tl.float32)
    slot = tl.load(meta_ptr + tok, mask=live, other=0)
    tail = tl.load(meta_ptr + TILE + tok, mask=live, other=0)
    if head < HEADS + KV:  # q and k turn with the position; v does not
        angle = (tail + P).to(tl.float32)[:, None] * tl.load(inv_freq_ptr + d % HALF)[None, :]
        c = tl.cos(angle).to(ty).to(tl.float32)
        s = tl.sin(angle).to(ty).to(tl.float32)
        y = y * c + tl.where((d < HALF)[None, :], -y2, y2) * s
    live2 = live[:, None]
    if head < HEADS:
        tl.store(q_ptr + tok[:, None] * (HEADS * D) + rows[None, :], y.to(ty), mask=live2)
    elif head < HEADS + KV:
        put = ((slot * KV + head - HEADS) * T + tail) * D
        tl.store(k_ptr + put[:, None] + d[None, :], y.to(ty), mask=live2)
    else:
        put = ((slot * KV + head - HEADS - KV) * T + tail) * D
        tl.store(v_ptr + put[:, None] + d[None, :], y.to(ty), mask=live2)


@triton.jit
def _attend(q_ptr, pk_ptr, pv_ptr, k_ptr, v_ptr, meta_ptr, m_ptr, l_ptr, acc_ptr, T, P, scale,
            HEADS: tl.constexpr, KV: tl.constexpr, D: tl.constexpr, GP: tl.constexpr,
            SPLIT: tl.constexpr, BL: tl.constexpr, TILE: tl.constexpr, FP32: tl.constexpr):
    """Program (token, key/value head, split): the token's q heads of that group over its
    share of the positions (the prefix's, then the row's tail up to the token), as a
    partial softmax (running max, sum, weighted values), merged by :func:`_out`."""
    tok = tl.program_id(0)
    kv = tl.program_id(1)
    split = tl.program_id(2)
    GROUP: tl.constexpr = HEADS // KV
    g = tl.arange(0, GP)
    heads = kv * GROUP + g
    d = tl.arange(0, D)
    ty = q_ptr.dtype.element_ty
    q = tl.load(q_ptr + tok * HEADS * D + heads[:, None] * D + d[None, :],
                mask=(g < GROUP)[:, None], other=0.0)
    q = (q.to(tl.float32) * scale).to(ty)
    slot = tl.load(meta_ptr + tok)
    length = P + tl.load(meta_ptr + TILE + tok) + 1
    chunk = tl.cdiv(tl.cdiv(length, SPLIT), BL) * BL
    start = split * chunk
    end = tl.minimum(start + chunk, length)
    m = tl.full((GP,), -float("inf"), tl.float32)
    l = tl.zeros((GP,), tl.float32)
    acc = tl.zeros((GP, D), tl.float32)
    tail_at = (slot * KV + kv) * T * D
    for at in range(start, end, BL):
        p = at + tl.arange(0, BL)
        inside = p < end
        pre = (p < P)[:, None]
        off = p[:, None] * D + d[None, :]
        toff = (p - P)[:, None] * D + d[None, :]
        keys = (tl.load(pk_ptr + kv * P * D + off, mask=inside[:, None] & pre, other=0.0)
                + tl.load(k_ptr + tail_at + toff, mask=inside[:, None] & ~pre, other=0.0))
        s = _dot(q, tl.trans(keys), FP32)
        s = tl.where(inside[None, :], s, -float("inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        alpha = tl.exp(m - m_new)
        w = tl.exp(s - m_new[:, None])
        values = (tl.load(pv_ptr + kv * P * D + off, mask=inside[:, None] & pre, other=0.0)
                  + tl.load(v_ptr + tail_at + toff, mask=inside[:, None] & ~pre, other=0.0))
        acc = acc * alpha[:, None] + _dot(w.to(ty), values, FP32)
        l = l * alpha + tl.sum(w, 1)
        m = m_new
    put = (tok * HEADS + heads) * SPLIT + split
    live = g < GROUP
    tl.store(m_ptr + put, m, mask=live)
    tl.store(l_ptr + put, l, mask=live)
    tl.store(acc_ptr + put[:, None] * D + d[None, :], acc, mask=live[:, None])


@triton.jit
def _merge(m_ptr, l_ptr, acc_ptr, a_ptr, HEADS: tl.constexpr, D: tl.constexpr,
           SPLIT: tl.constexpr):
    """Program (token, head): the attention's splits merged, rounded to bf16 as
    transformers' attention output is."""
    at = tl.program_id(0) * HEADS + tl.program_id(1)
    s = tl.arange(0, SPLIT)
    d = tl.arange(0, D)
    ms = tl.load(m_ptr + at * SPLIT + s)
    weight = tl.where(ms == -float("inf"), 0.0, tl.exp(ms - tl.max(ms, 0)))
    total = tl.sum(weight * tl.load(l_ptr + at * SPLIT + s), 0)
    acc = tl.load(acc_ptr + (at * SPLIT + s)[:, None] * D + d[None, :])
    mixed = tl.sum(weight[:, None] * acc, 0)
    tl.store(a_ptr + at * D + d, (mixed / total).to(a_ptr.dtype.element_ty))


@triton.jit
def _gate_up(h_ptr, ln_ptr, w_ptr, out_ptr, M, eps, K: tl.constexpr, N: tl.constexpr,
             BN: tl.constexpr, BK: tl.constexpr, TILE: tl.constexpr, FP32: tl.constexpr):
    """Program: BN columns of SiLU(gate(norm(h))) * up(norm(h)) for every token."""
    n = tl.program_id(0) * BN + tl.arange(0, BN)
    tok = tl.arange(0, TILE)
    live = tok < M
    rstd = _rstd(h_ptr, tok, live, eps, K, BK)
    g = tl.zeros((TILE, BN), tl.float32)
    u = tl.zeros((TILE, BN), tl.float32)
    for at in tl.static_range(0, K, BK):
        k = at + tl.arange(0, BK)
        xn = _normed(h_ptr, ln_ptr, tok, live, rstd, k, K)
        wg = tl.load(w_ptr + n[:, None] * K + k[None, :], mask=k[None, :] < K, other=0.0)
        wu = tl.load(w_ptr + (n[:, None] + N) * K + k[None, :], mask=k[None, :] < K, other=0.0)
        g += _dot(xn, tl.trans(wg), FP32)
        u += _dot(xn, tl.trans(wu), FP32)
    ty = h_ptr.dtype.element_ty
    g = g.to(ty).to(tl.float32)
    u = u.to(ty).to(tl.float32)
    act = (g / (1.0 + tl.exp(-g))).to(ty).to(tl.float32)
    tl.store(out_ptr + tok[:, None] * N + n[None, :], (act * u).to(ty), mask=live[:, None])


@triton.jit
def _project(x_ptr, w_ptr, h_ptr, part_ptr, M, K: tl.constexpr, N: tl.constexpr,
             BN: tl.constexpr, BK: tl.constexpr, SPLITK: tl.constexpr, TILE: tl.constexpr,
             FP32: tl.constexpr):
    """Program (BN columns, a K part): h += x W^T for every token (the attention's output
    projection, the MLP's down projection). With SPLITK parts each writes its fp32 sum to
    ``part_ptr`` and :func:`_add` adds them up (more programs for a short, wide weight)."""
    n = tl.program_id(0) * BN + tl.arange(0, BN)
    kid = tl.program_id(1)
    tok = tl.arange(0, TILE)
    live = tok < M
    y = tl.zeros((TILE, BN), tl.float32)
    for at in range(kid * (K // SPLITK), (kid + 1) * (K // SPLITK), BK):
        k = at + tl.arange(0, BK)
        x = tl.load(x_ptr + tok[:, None] * K + k[None, :], mask=live[:, None], other=0.0)
        w = tl.load(w_ptr + n[:, None] * K + k[None, :])
        y += _dot(x, tl.trans(w), FP32)
    put = tok[:, None] * N + n[None, :]
    if SPLITK == 1:
        ty = h_ptr.dtype.element_ty
        h = tl.load(h_ptr + put, mask=live[:, None], other=0.0)
        tl.store(h_ptr + put, (h + y.to(ty)).to(ty), mask=live[:, None])
    else:
        tl.store(part_ptr + kid * TILE * N + put, y, mask=live[:, None])


@triton.jit
def _add(part_ptr, h_ptr, MN, SPLITK: tl.constexpr, TILE_N: tl.constexpr, BLOCK: tl.constexpr):
    """h += the sum of :func:`_project`'s parts, rounded as one projection's output."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = i < MN
    y = tl.zeros((BLOCK,), tl.float32)
    for kid in tl.static_range(SPLITK):
        y += tl.load(part_ptr + kid * TILE_N + i, mask=live, other=0.0)
    ty = h_ptr.dtype.element_ty
    h = tl.load(h_ptr + i, mask=live, other=0.0)
    tl.store(h_ptr + i, (h + y.to(ty)).to(ty), mask=live)


@triton.jit
def _head(h_ptr, ln_ptr, w_ptr, out_ptr, M, eps, K: tl.constexpr, N, BN: tl.constexpr,
          BK: tl.constexpr, TILE: tl.constexpr, FP32: tl.constexpr):
    """Program: BN logits of every row (fp32 out) from its final norm."""
    n = tl.program_id(0) * BN + tl.arange(0, BN)
    tok = tl.arange(0, TILE)
    live = tok < M
    rstd = _rstd(h_ptr, tok, live, eps, K, BK)
    y = tl.zeros((TILE, BN), tl.float32)
    for at in tl.static_range(0, K, BK):
        k = at + tl.arange(0, BK)
        xn = _normed(h_ptr, ln_ptr, tok, live, rstd, k, K)
        w = tl.load(w_ptr + n[:, None] * K + k[None, :], mask=(n[:, None] < N) & (k[None, :] < K),
                    other=0.0)
        y += _dot(xn, tl.trans(w), FP32)
    y = y.to(h_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + tok[:, None] * N + n[None, :], y, mask=live[:, None] & (n[None, :] < N))


def _tile(m: int) -> int:
    return max(16, triton.next_power_of_2(m))


class FusedRows:
    """The model call of ``rows`` (a :class:`~pete_osc.engines.torch_rows.TorchRows`) for
    up to :data:`MAX_TOKENS` tokens, over the weights the engine's single-frame fused step
    stacked (``decoder``, a :class:`~pete_osc.engines.fused.FusedDecoder`). The block
    shapes are attributes (``bench/batch.py --tune`` tries others)."""

    def __init__(self, rows, decoder):
        self.rows, self.torch = rows, rows.torch
        self.layers = decoder.layers
        self.norm, self.head, self.inv_freq = decoder.norm, decoder.head, decoder.inv_freq
        self.eps, self.vocab, self.inter = decoder.eps, decoder.vocab, decoder.inter
        self.hidden, self.heads, self.kv = decoder.hidden, decoder.heads, decoder.kv_heads
        self.d = decoder.head_dim
        self.max_tokens = MAX_TOKENS
        self.fp32 = self.norm.dtype == self.torch.float32
        self.gp = max(16, triton.next_power_of_2(self.heads // self.kv))
        self.bk = min(128, triton.next_power_of_2(self.hidden))
        if self.d < 16 or self.hidden % self.bk or self.hidden % 32 or self.inter % 64:
            raise ValueError("shapes the fused batch step is not written for")
        # Block shapes (bench/batch.py --tune on an H100, docs/benchmarks.md: the fastest at
        # 1 and 8 rows of those tried): columns of a head per q/k/v program, attention
        # blocks per token and key/value head, columns per program of gate/up, o and down,
        # and the K parts of o and down (see _project)
        self.part, self.splits, self.bn, self.split_o, self.split_down = 16, 16, 32, 2, 4
        self.head_block = 64
        self.calls = 0  # model calls run here (in a CUDA graph: each recording)
        self.tokens = 0  # tokens those calls took

    def _project(self, x, w, h, parts, m, tile, split):
        K, N = w.shape[1], w.shape[0]
        bk = next((b for b in (64, 32, 16) if K % (b * split) == 0), None)
        if bk is None:  # (a K that does not split so: one part)
            bk, split = next(b for b in (64, 32, 16) if K % b == 0), 1
        _project[(N // self.bn, split)](x, w, h, parts, m, K=K, N=N, BN=self.bn, BK=bk,
                                        SPLITK=split, TILE=tile, FP32=self.fp32)
        if split > 1:
            _add[(triton.cdiv(m * N, 1024),)](parts, h, m * N, SPLITK=split, TILE_N=tile * N,
                                              BLOCK=1024)

    def forward(self, x, idx, start, last):
        """As :meth:`TorchRows._layers`: ``x`` (rows, width, hidden) at each row's next
        positions (slot ``idx``, tail position ``start``); the logits after ``last``."""
        torch, rows = self.torch, self.rows
        n, width = x.shape[:2]
        m = n * width
        tile = _tile(m)
        K, H, KV, D, S = self.hidden, self.heads, self.kv, self.d, self.splits
        self.calls += 1
        self.tokens += m
        h = x.reshape(m, K).contiguous().clone()
        meta = torch.zeros((2, tile), dtype=torch.int32, device=x.device)  # slot, tail position
        meta[0, :m] = idx[:, None].expand(n, width).reshape(m)
        meta[1, :m] = (start[:, None] + torch.arange(width, device=x.device)).reshape(m)
        q = torch.empty((m, H * D), dtype=x.dtype, device=x.device)
        a = torch.empty_like(q)
        ml = torch.empty((2, m * H * S), dtype=torch.float32, device=x.device)
        acc = torch.empty((m * H * S, D), dtype=torch.float32, device=x.device)
        mlp = torch.empty((m, self.inter), dtype=x.dtype, device=x.device)
        split = max(self.split_o, self.split_down)
        parts = torch.empty((split, tile, K), dtype=torch.float32, device=x.device)
        T, P, fp32 = rows.tail, rows.prefix_len, self.fp32
        part = min(self.part, D)
        for layer, (ln1, qkv, bias, wo, ln2, gate_up, down) in enumerate(self.layers):
            _qkv[(H + 2 * KV, D // part)](
                h, ln1, qkv, bias, self.inv_freq, meta, q, rows.k[layer], rows.v[layer], m, T, P,
                self.eps, K=K, HEADS=H, KV=KV, D=D, PART=part, BK=self.bk, TILE=tile, FP32=fp32)
            _attend[(m, KV, S)](
                q, rows.pk[layer], rows.pv[layer], rows.k[layer], rows.v[layer], meta, ml[0],
                ml[1], acc, T, P, rows.scale, HEADS=H, KV=KV, D=D, GP=self.gp, SPLIT=S,
                BL=32, TILE=tile, FP32=fp32, num_warps=4)
            _merge[(m, H)](ml[0], ml[1], acc, a, HEADS=H, D=D, SPLIT=S)
            self._project(a, wo, h, parts, m, tile, self.split_o)
            _gate_up[(self.inter // self.bn,)](
                h, ln2, gate_up, mlp, m, self.eps, K=K, N=self.inter, BN=self.bn, BK=self.bk,
                TILE=tile, FP32=fp32)
            self._project(mlp, down, h, parts, m, tile, self.split_down)
        picked = h.view(n, width, K)[torch.arange(n, device=x.device), last].contiguous()
        logits = torch.empty((n, self.vocab), dtype=torch.float32, device=x.device)
        _head[(triton.cdiv(self.vocab, self.head_block),)](
            picked, self.norm, self.head, logits, n, self.eps, K=K, N=self.vocab,
            BN=self.head_block, BK=self.bk, TILE=_tile(n), FP32=fp32)
        return logits

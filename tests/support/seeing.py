"""Test models that read the frame: a FastVLM whose answer is a known function of the
picture, built through the engines' own model classes.

A FastVLM with random weights cannot show which frame reached it: its vision tower
embeds every image to (nearly) the same thing, and its language model hardly looks at
one image token. The model built here is a real FastVLM checkpoint (the same safetensors
layout, config and processor files as :mod:`support.models` writes), whose weights
are set so that:

- the **vision tower** (FastViTHD, reparameterised) passes the picture's mean R, G and B
  of each token's 64x64 region through to three of its output channels, exactly: every
  residual branch is switched off (its layer scale 0), every convolution on the main path
  is the identity (stride 1) or the mean of each 2x2 block (stride 2), and the colour
  rides 8 above zero so that the GELUs on the way are the identity;
- the **projector** turns a token's mean colour ``x`` into a score per colour name
  (``c . x - |c|^2 / 2``: the nearest of red, green, blue, white and black scores
  highest), a marker that tells image tokens from text, and a salience (how far the
  token's colour is from grey);
- the **language model** writes ``color: NAME`` lines over and over (the scripted model's
  loop, see :func:`support.models.script_tables`), where NAME is read, after ``:``,
  from one attention head of the first layer that looks only at the image tokens, most at
  the most colourful one.

So a red frame is answered ``color: red``, a blue one ``color: blue``; at 128 px (four
image tokens) a small red patch on a light grey frame is ``color: red`` (the head looks at
the red token), while at 64 px (one token: the patch averaged with the grey) it is
``color: white``. Nothing outside the weights and the config knows the answer.
"""

from __future__ import annotations

from pathlib import Path

# The names the model answers with, and the colour (R, G, B in 0..1) each stands for.
COLOURS = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1), "white": (1, 1, 1),
           "black": (0, 0, 0)}
OFFSET = 8.0  # GELU(x + 8) == x + 8 to 1e-14
# Hidden axes of an image token: its marker, its salience, each colour's score; and the
# axes where the first layer writes what it read of the picture.
MARK, SALIENCE, SCORE, READ = -1, -2, -8, -14
RESERVED = list(range(READ, 0))
MARK_VALUE = 100.0  # dominates the token's RMS, so the norm leaves the other axes' scale
SALIENCE_GAIN = 10.0


def color_line(name: str) -> str:
    return f"color: {name}\n"


def _script_ids(tokenizer) -> tuple[int, int, int, dict[str, int]]:
    """The tokens of ``color: NAME\\n``: (color, ':', newline, {name: token}); each name
    must be one token, in this tokenizer (the small trained one and Qwen2's)."""
    ids = {name: tokenizer.encode(color_line(name)).ids for name in COLOURS}
    first = ids["red"]
    if any(len(i) != 4 or i[:2] != first[:2] or i[3] != first[3] for i in ids.values()):
        raise ValueError(f"'color: NAME' is not 4 tokens for every name: {ids}")
    return first[0], first[1], first[3], {name: i[2] for name, i in ids.items()}


# ---- torch (transformers' FastVlmForConditionalGeneration, timm's FastViT) ----------------

def see_torch(model, tokenizer) -> None:
    """Set a FastVlmForConditionalGeneration's weights as the module docstring says."""
    import torch

    with torch.no_grad():
        where = _torch_tower(model.model.vision_tower.timm_model)
        _torch_projector(model.model.multi_modal_projector, where, model.config.text_config)
        _torch_language(model, tokenizer)


def _torch_tower(timm_model) -> list[int]:
    import torch

    convs: list = []
    hooks = [m.register_forward_hook(lambda m, i, o: convs.append(m))
             for m in timm_model.modules() if isinstance(m, torch.nn.Conv2d)]
    timm_model.forward_features(torch.zeros(1, 3, 64, 64))  # the main path, in order
    for hook in hooks:
        hook.remove()
    branch = {id(x) for m in timm_model.modules()
              if type(m).__name__ in ("ConvMlp", "Attention", "SEModule") for x in m.modules()}
    for p in timm_model.parameters():
        p.zero_()
    for m in timm_model.modules():
        if type(m).__name__ == "SEModule":
            m.fc2.bias.fill_(30.0)  # the gate open: sigmoid(30) = 1
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.fill_(1.0)
            m.running_var.fill_(1.0)
            m.running_mean.zero_()
        if isinstance(m, torch.nn.LayerNorm) or type(m).__name__ == "LayerNorm2d":
            m.weight.fill_(1.0)
    # (layer scales are parameters, zeroed above: every residual branch adds nothing)
    main = [c for c in dict.fromkeys(convs) if id(c) not in branch]
    return _route_colour(main, lambda c: (c.in_channels, c.out_channels, c.groups,
                                          c.kernel_size[0], c.stride[0]),
                         lambda c, o, j, taps, value: c.weight.__setitem__(
                             (o, j, taps[0], taps[1]), value),
                         lambda c, o: c.bias.__setitem__(o, OFFSET))


def _route_colour(convs, shape, put, lift) -> list[int]:
    """Make each convolution on the main path carry the three colour channels on: the
    identity at stride 1, the 2x2 block's mean at stride 2 (the taps at and after the
    centre, inside the map whatever its padding). Returns the output channels they end
    in."""
    where = [0, 1, 2]
    for n, conv in enumerate(convs):
        cin, cout, groups, k, stride = shape(conv)
        per_in, per_out = cin // groups, cout // groups
        new = []
        for i in where:
            o = (i // per_in) * per_out if groups > 1 else i
            centre = k // 2
            taps = ([(centre, centre)] if stride == 1 else
                    [(centre + a, centre + b) for a in (0, 1) for b in (0, 1)])
            for tap in taps:
                put(conv, o, i % per_in, tap, 1.0 / len(taps))
            if n == 0:
                lift(conv, o)  # the colour rides OFFSET above zero from here on
            new.append(o)
        where = new
    return where


def _torch_projector(proj, where: list[int], text) -> None:
    weights1, bias1, weights2, bias2 = _projector_tables(where, text.hidden_size,
                                                         proj.linear_1.in_features)
    import torch

    proj.linear_1.weight.copy_(torch.tensor(weights1))
    proj.linear_1.bias.copy_(torch.tensor(bias1))
    proj.linear_2.weight.copy_(torch.tensor(weights2))
    proj.linear_2.bias.copy_(torch.tensor(bias2))


def _projector_tables(where: list[int], hidden: int, features: int):
    """linear_1 -> GELU -> linear_2 (as numpy, [out, in]): a token's colour x (3 channels
    at ``where``, OFFSET above zero) to its scores, its salience and the marker."""
    import numpy as np

    w1 = np.zeros((hidden, features), np.float32)
    b1 = np.zeros(hidden, np.float32)
    w2 = np.zeros((hidden, hidden), np.float32)
    b2 = np.zeros(hidden, np.float32)
    for j, c in enumerate(COLOURS.values()):  # rows 0..4: each colour's score, lifted
        for k, channel in enumerate(where):
            w1[j, channel] = c[k]
        b1[j] = -sum(c) * OFFSET - sum(v * v for v in c) / 2 + OFFSET
        w2[SCORE + j, j] = 1.0
        b2[SCORE + j] = -OFFSET
    # rows 5..10: |x_a - x_b| as 20 * relu-like GELU of both differences; their sum over
    # the three pairs is 2 * (max - min): 0 for a grey, 2 for a pure colour
    row = len(COLOURS)
    for a in range(3):
        for b in range(3):
            if a != b:
                w1[row, where[a]] = 20.0
                w1[row, where[b]] = -20.0
                w2[SALIENCE, row] = SALIENCE_GAIN / 20.0
                row += 1
    b2[MARK] = MARK_VALUE
    return w1, b1, w2, b2


def _torch_language(model, tokenizer) -> None:
    import torch

    text = model.config.text_config
    tables = _language_tables(tokenizer, text.hidden_size, text.num_attention_heads,
                              text.num_key_value_heads, model.get_input_embeddings().weight.shape[0])
    lm = model.model.language_model
    for name, p in lm.named_parameters():
        if name.endswith(("o_proj.weight", "o_proj.bias", "down_proj.weight", "down_proj.bias")):
            p.zero_()
    embed = model.get_input_embeddings().weight
    embed[:, RESERVED] = 0.0  # the axes an image token speaks on are silent in text
    for token, row in tables["embed"].items():
        embed[token] = torch.tensor(row)
    model.lm_head.weight.copy_(torch.tensor(tables["head"]))
    attn = lm.layers[0].self_attn
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        layer = getattr(attn, name)
        weight, bias = tables[name]
        layer.weight.copy_(torch.tensor(weight))
        if layer.bias is not None:
            layer.bias.copy_(torch.tensor(bias))


def _language_tables(tokenizer, hidden: int, heads: int, kv_heads: int, vocab: int) -> dict:
    """The language model's changed weights (numpy, [out, in]): the token loop, and the
    first layer's head 0 that reads the picture. Every layer's output projections are
    zeroed by the caller, except this head's o_proj rows."""
    import numpy as np

    head_dim = hidden // heads
    color, colon, newline, names = _script_ids(tokenizer)
    axis = {color: 0, colon: 1, newline: 2}
    for j, token in enumerate(names.values()):
        axis[token] = 3 + j
    embed = {}
    for token, a in axis.items():
        row = np.zeros(hidden, np.float32)
        row[a] = 4.0
        embed[token] = row
    head = np.zeros((vocab, hidden), np.float32)
    head[color, axis[newline]] = 20.0  # newline (the prompt's last token too) -> color
    head[colon, axis[color]] = 20.0
    for j, token in enumerate(names.values()):
        head[newline, axis[token]] = 20.0
        head[token, axis[colon]] = 10.0  # after ':' a colour name ...
        head[token, READ + j] = 5.0  # ... the one the picture scores highest
    # Head 0 of layer 0: a query that is the same everywhere, a key on the image marker
    # (and salience), in the slowest rotary pair (the same at any distance); its value is
    # the token's colour scores, written back to the READ axes.
    pair = head_dim // 2 - 1
    q = (np.zeros((heads * head_dim, hidden), np.float32), np.zeros(heads * head_dim, np.float32))
    k = (np.zeros((kv_heads * head_dim, hidden), np.float32), np.zeros(kv_heads * head_dim, np.float32))
    v = (np.zeros((kv_heads * head_dim, hidden), np.float32), np.zeros(kv_heads * head_dim, np.float32))
    o = (np.zeros((hidden, heads * head_dim), np.float32), np.zeros(hidden, np.float32))
    q[1][pair] = 10.0
    k[0][pair, MARK] = 10.0
    k[0][pair, SALIENCE] = 30.0
    for j in range(len(COLOURS)):
        v[0][j, SCORE + j] = 12.5
        o[0][READ + j, j] = 1.0
    return {"embed": embed, "head": head, "q_proj": q, "k_proj": k, "v_proj": v, "o_proj": o}


def build_seeing_torch(folder: str | Path, shape=None, qwen: Path | None = None) -> Path:
    """A FastVLM folder in transformers' format (see build_fastvlm_torch) that reads the
    frame (see the module docstring)."""
    import torch
    from tokenizers import Tokenizer
    from transformers import FastVlmForConditionalGeneration

    from .models import TINY, build_fastvlm_torch

    folder = build_fastvlm_torch(folder, shape or TINY, qwen=qwen)
    model = FastVlmForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    see_torch(model, Tokenizer.from_file(str(folder / "tokenizer.json")))
    model.to(torch.float16).save_pretrained(folder)
    return folder


# ---- mlx (mlx-vlm's FastVLM) -----------------------------------------------------------------

def see_mlx(model, weights: dict, tokenizer, shape) -> None:
    """Change the checkpoint's ``weights`` (name -> mx.array, as build_fastvlm_mlx saves
    them) of the mlx-vlm FastVLM ``model`` as the module docstring says."""
    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np

    tower = model.vision_tower.vision_model
    tower.eval()  # (BatchNorm's running statistics: a 64 px frame ends at one pixel)
    names = {id(m): n for n, m in model.named_modules()}
    order: list = []
    call = nn.Conv2d.__call__
    nn.Conv2d.__call__ = lambda self, x: (order.append(self), call(self, x))[1]
    try:
        mx.eval(tower(mx.zeros((1, 64, 64, 3))))  # the main path, in order
    finally:
        nn.Conv2d.__call__ = call
    branch = {id(x) for _, m in tower.named_modules()
              if type(m).__name__ in ("ConvFFN", "MHSA", "SEBlock") for _, x in m.named_modules()}
    arrays = {k: np.array(v.astype(mx.float32)) for k, v in weights.items()}
    for key, value in arrays.items():  # every weight but the norms' (a zero variance
        # would turn a switched-off branch into 0 * inf)
        if key.startswith("vision_tower.") and not any(n in key for n in (".norm.", ".bn.")):
            value[...] = 0.0
    for _, m in tower.named_modules():
        if type(m).__name__ == "SEBlock":
            arrays[names[id(m.expand)] + ".bias"][...] = 30.0  # the gate open
    seen: set = set()
    main = [c for c in order if id(c) not in branch and not (id(c) in seen or seen.add(id(c)))]

    def shape_of(conv):
        out, k, _, per_in = conv.weight.shape
        return per_in * conv.groups, out, conv.groups, k, conv.stride[0]

    where = _route_colour(
        main, shape_of,
        lambda c, o, j, tap, value: arrays[names[id(c)] + ".weight"].__setitem__(
            (o, tap[0], tap[1], j), value),
        lambda c, o: arrays[names[id(c)] + ".bias"].__setitem__(o, OFFSET))
    w1, b1, w2, b2 = _projector_tables(where, shape.hidden_size,
                                       arrays["mm_projector.0.weight"].shape[1])
    arrays["mm_projector.0.weight"], arrays["mm_projector.0.bias"] = w1, b1
    arrays["mm_projector.2.weight"], arrays["mm_projector.2.bias"] = w2, b2
    lm = "language_model.model."
    for key, value in arrays.items():
        if key.startswith(lm + "layers.") and key.endswith(
                ("o_proj.weight", "o_proj.bias", "down_proj.weight", "down_proj.bias")):
            value[...] = 0.0
    vocab = arrays[lm + "embed_tokens.weight"].shape[0]
    tables = _language_tables(tokenizer, shape.hidden_size, shape.num_attention_heads,
                              shape.num_key_value_heads, vocab)
    embed = arrays[lm + "embed_tokens.weight"]
    embed[:, RESERVED] = 0.0
    for token, row in tables["embed"].items():
        embed[token] = row
    arrays["language_model.lm_head.weight"] = tables["head"]
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        weight, bias = tables[name]
        arrays[f"{lm}layers.0.self_attn.{name}.weight"] = weight
        if f"{lm}layers.0.self_attn.{name}.bias" in arrays:
            arrays[f"{lm}layers.0.self_attn.{name}.bias"] = bias
    for key, value in arrays.items():
        weights[key] = mx.array(value).astype(weights[key].dtype)


def build_seeing_mlx(folder: str | Path, shape=None, qwen: Path | None = None) -> Path:
    """A FastVLM folder that ``mlx_vlm.load`` reads (see build_fastvlm_mlx) and that reads
    the frame (see the module docstring)."""
    from tokenizers import Tokenizer

    from .models import TINY, build_fastvlm_mlx

    def change(model, weights, written: Path, text_shape) -> None:
        see_mlx(model, weights, Tokenizer.from_file(str(written / "tokenizer.json")), text_shape)

    return build_fastvlm_mlx(folder, shape or TINY, qwen=qwen, change=change)

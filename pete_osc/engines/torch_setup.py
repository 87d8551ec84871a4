"""The torch engine's set-up choices: the device, int8 weights on the CPU (``--quantize``),
the fused decode step (``--kernels``), and the chat prompt split around the image."""

from __future__ import annotations

import logging

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

"""Int8 weights for the language model on a CPU: a token's decode reads every weight once,
so a 2-core laptop without an NVIDIA GPU is bound by memory, and a quarter of fp32's
bytes is most of the way to keeping up.

Each ``nn.Linear`` of the language model (and its output layer) becomes an
:class:`Int8Linear`: int8 weights with one scale per output row (symmetric, absolute
maximum), multiplied by PyTorch's own CPU kernel for that layout
(``aten._weight_int8pack_mm``, the one torchao's int8 weight-only path calls) with the
activations in bfloat16; norms, attention, the vision tower and everything else stay as
they were. The first layers (one in twelve) keep their weights: an error made there runs
through every layer after it, and measured on FastVLM-0.5B's shapes, keeping the first
two moved the lowest logits cosine to fp32 from 0.9983 to 0.9995 for 3% more bytes.

Chosen by measurement (docs/benchmarks.md): torch's dynamic int8 (``quantize_dynamic``,
int8 activations too) was faster still but moved the logits too far (cosine 0.996 to
fp32); the same kernel fed fp32 activations, or torchao's own wrapper with fp32
activations, was slower than fp32.
"""

from __future__ import annotations

import logging

from ..errors import PeteError

log = logging.getLogger(__name__)

MODES = ("auto", "int8", "off")


def available(torch) -> bool:
    """This PyTorch has the int8 weight kernel."""
    return hasattr(torch.ops.aten, "_weight_int8pack_mm")


def int8_linear_class(torch):
    class Int8Linear(torch.nn.Module):
        """``nn.Linear`` with int8 weights and a scale per output row."""

        def __init__(self, linear):
            super().__init__()
            weight = linear.weight.detach().float()
            scale = weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0
            q = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
            self.register_buffer("weight", q.contiguous())
            self.register_buffer("scale", scale.to(torch.bfloat16).contiguous())
            bias = linear.bias
            self.register_buffer("bias", None if bias is None else bias.detach().clone())
            self.in_features, self.out_features = linear.in_features, linear.out_features

        # The output rows to compute (token ids, sorted), the rest minus infinity; None:
        # all. Set for one step by engines.torch_setup.SparseHead.
        only = None

        def forward(self, x):
            rows = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()
            if self.only is None:
                y = torch.ops.aten._weight_int8pack_mm(rows, self.weight, self.scale)
            else:  # the same rows' numbers, read from a gathered copy of theirs alone
                y = rows.new_full((rows.shape[0], self.out_features), float("-inf"))
                y[:, self.only] = torch.ops.aten._weight_int8pack_mm(
                    rows, self.weight.index_select(0, self.only), self.scale.index_select(0, self.only))
            y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
            return y if self.bias is None else y + self.bias

    return Int8Linear


def kept_layers(count: int) -> int:
    """How many of the first decoder layers keep their weights: one in twelve, at least one."""
    return max(1, round(count / 12))


def int8_weights(torch, language_model, output_layer_owner) -> int:
    """Swap every ``nn.Linear`` of ``language_model``'s decoder layers but the first few
    (:func:`kept_layers`), and ``lm_head`` of ``output_layer_owner``, for int8 ones;
    returns how many were swapped."""
    if not available(torch):
        raise PeteError(f"--quantize int8: PyTorch {torch.__version__} has no int8 weight "
                        "kernel (aten._weight_int8pack_mm); upgrade torch or use --quantize off")
    Int8Linear = int8_linear_class(torch)
    swapped = 0

    def swap(module):
        nonlocal swapped
        for name, child in module.named_children():
            if isinstance(child, torch.nn.Linear):
                setattr(module, name, Int8Linear(child))
                swapped += 1
            else:
                swap(child)

    layers = getattr(language_model, "layers", None)
    if layers is None:
        swap(language_model)
    else:
        for layer in list(layers)[kept_layers(len(layers)):]:
            swap(layer)
    head = getattr(output_layer_owner, "lm_head", None)
    if isinstance(head, torch.nn.Linear):
        # A tied output layer gets an int8 copy; the input embeddings stay as they are.
        output_layer_owner.lm_head = Int8Linear(head)
        swapped += 1
    return swapped

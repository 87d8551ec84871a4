"""transformers' FastVLM checkpoint (model type ``fast_vlm``: FastViTHD from timm, a
two-layer projector, Qwen2) as a vLLM model: vLLM's own Qwen2 for the language model
(its paged attention, fused layers and CUDA graphs), the tower and projector as
transformers builds them, and vLLM's multimodal processor counting one image token per
64x64 pixels of the frame as sent (the checkpoint's LlavaProcessor expands ``<image>``
the same way). Registered by :func:`pete_osc.vllm.register`; imports vLLM."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from transformers import AutoModel, BatchFeature
from transformers.models.fast_vlm.modeling_fast_vlm import FastVlmMultiModalProjector
from transformers.models.llava import LlavaProcessor
from vllm.config import VllmConfig
from vllm.logger import init_logger
from vllm.model_executor.models.interfaces import SupportsMultiModal, SupportsPP
from vllm.model_executor.models.llava import (
    BaseLlavaMultiModalProcessor,
    BaseLlavaProcessingInfo,
    LlavaDummyInputsBuilder,
)
from vllm.model_executor.models.utils import (
    AutoWeightsLoader,
    WeightsMapper,
    init_vllm_registered_model,
    maybe_prefix,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.parse import ImageSize

log = init_logger("vllm.pete_osc")  # (under vLLM's logger: its handler prints it)
# FastViTHD downsamples 64 times: a frame of S x S pixels is (S/64)^2 image tokens.
PATCH = 64


class FastVlmProcessingInfo(BaseLlavaProcessingInfo):
    def get_hf_config(self):
        return self.ctx.get_hf_config()

    def get_hf_processor(self, **kwargs: object):
        return self.ctx.get_hf_processor(LlavaProcessor, **kwargs)

    def get_num_image_tokens(self, *, image_width: int, image_height: int) -> int:
        return max(1, image_width // PATCH) * max(1, image_height // PATCH)

    def get_image_size_with_most_features(self) -> ImageSize:
        # The checkpoint's own size (1024 px: what a server that resizes makes of a frame).
        size = self.get_hf_processor().image_processor.crop_size
        side = max(size.get("height", 1024), size.get("width", 1024))
        return ImageSize(width=side, height=side)


class FastVlmMultiModalProcessor(BaseLlavaMultiModalProcessor[FastVlmProcessingInfo]):
    def _get_mm_fields_config(self, hf_inputs: BatchFeature,
                              hf_processor_mm_kwargs: Mapping[str, object]):
        return dict(pixel_values=MultiModalFieldConfig.batched("image"))


@MULTIMODAL_REGISTRY.register_processor(FastVlmMultiModalProcessor, info=FastVlmProcessingInfo,
                                        dummy_inputs=LlavaDummyInputsBuilder)
class FastVlmForConditionalGeneration(nn.Module, SupportsMultiModal, SupportsPP):
    hf_to_vllm_mapper = WeightsMapper(orig_to_new_prefix={
        "model.language_model.": "language_model.model.",
        "model.vision_tower.": "vision_tower.",
        "model.multi_modal_projector.": "multi_modal_projector.",
        "lm_head.": "language_model.lm_head.",
    })

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return "<image>"
        raise ValueError("FastVLM takes images only")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.config = config
        log.info("FastVLM served by pete-osc's model for vLLM (vLLM's Qwen2, transformers' "
                 "FastViTHD); --model-impl transformers for vLLM's Transformers backend")
        self.configure_mm_token_handling(vocab_size=config.text_config.vocab_size,
                                         mm_token_ids=[config.image_token_index])
        with self._mark_tower_model(vllm_config, "image"):
            self.vision_tower = AutoModel.from_config(config.vision_config)
            self.multi_modal_projector = FastVlmMultiModalProjector(config)
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config, hf_config=config.text_config,
                prefix=maybe_prefix(prefix, "language_model"), architectures=["Qwen2ForCausalLM"])
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors

    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Frames (n, 3, H, W) of one size: their image tokens (n, H*W/64^2, hidden)."""
        dtype = next(self.vision_tower.parameters()).dtype
        features = self.vision_tower(pixels.to(dtype), return_dict=True).last_hidden_state
        return self.multi_modal_projector(features.flatten(2).permute(0, 2, 1))

    def embed_multimodal(self, **kwargs: object):
        pixels = kwargs.pop("pixel_values", None)
        if pixels is None:
            return []
        if isinstance(pixels, torch.Tensor):  # frames of one size: the tower once
            return tuple(self._embed(pixels))
        return tuple(self._embed(p[None] if p.dim() == 3 else p)[0] for p in pixels)

    def forward(self, input_ids, positions, intermediate_tensors=None, inputs_embeds=None,
                **kwargs: object):
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(input_ids, positions, intermediate_tensors,
                                         inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor):
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return AutoWeightsLoader(self).load_weights(weights, mapper=self.hf_to_vllm_mapper)

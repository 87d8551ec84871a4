"""FastVLM as a vLLM model of pete-osc's own (issue 26): loaded by vLLM through the
``vllm.general_plugins`` entry point where pete-osc is installed beside it (``pip install
'pete-osc[vllm]'`` in vLLM's environment). Nothing here is imported by pete-osc itself,
and nothing but this function is imported at vLLM's start: the model is registered by
name and imported by vLLM when a FastVLM checkpoint is served."""


def register() -> None:
    """vLLM's plugin hook: transformers' FastVLM architecture name served by
    :mod:`pete_osc.vllm.fastvlm` (``--model-impl transformers`` still picks vLLM's
    Transformers backend instead)."""
    from vllm import ModelRegistry

    if "FastVlmForConditionalGeneration" not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model("FastVlmForConditionalGeneration",
                                     "pete_osc.vllm.fastvlm:FastVlmForConditionalGeneration")

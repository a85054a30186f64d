"""bitsandbytes' AVX512-BF16 CPU kernel for 4-bit layers: the layer sizes it takes, and keeping trained models off it.

On such CPUs bitsandbytes repacks each 4-bit weight, at the layer's first eval-mode forward without gradients, for an
inference-only GEMM in blocks of 32 output features by one quantisation block of input features (64 by default); other
sizes fail deep inside bitsandbytes ("N must be divisible by block_n") once model and data are paid for (docs/cli.md).
"""

CPU_4BIT_BLOCK = 32  # the block of output features of bitsandbytes' `_convert_weight_packed_for_cpu`


def cpu_repacks_4bit_weights() -> bool:
    """Whether bitsandbytes repacks 4-bit weights for its AVX512-BF16 CPU kernel on this machine."""
    try:
        from bitsandbytes.functional import has_avx512bf16
    except ImportError:
        return False
    return bool(has_avx512bf16())


def check_4bit_layer_sizes(model) -> None:
    """Refuse the first 4-bit CPU layer whose sizes the repacking cannot take (a no-op where nothing is repacked)."""
    if not getattr(model, "is_loaded_in_4bit", False) or not cpu_repacks_4bit_weights():
        return
    from bitsandbytes.nn import Linear4bit

    for name, module in model.named_modules():
        if not isinstance(module, Linear4bit) or module.weight.device.type != "cpu":
            continue
        blocksize = module.weight.quant_state.blocksize
        if module.out_features % CPU_4BIT_BLOCK or module.in_features % blocksize:
            layer = name.removesuffix(".base_layer")  # the quantised base of a LoRA layer
            raise ValueError(
                f"4-bit layer `{layer}` ({module.in_features} → {module.out_features} features) does not fit "
                f"bitsandbytes' CPU kernel on this CPU (AVX512-BF16), which needs output sizes that are multiples of "
                f"{CPU_4BIT_BLOCK} and input sizes that are multiples of the quantisation block ({blocksize}): load "
                f"the model without `load_in_4bit` (fp32, or `load_in_8bit`), or keep such layers unquantised with "
                f'`BitsAndBytesConfig(llm_int8_skip_modules=["{layer.rsplit(".", 1)[-1]}"])`.'
            )


def keep_4bit_weights_trainable(model) -> None:
    """Keep a model being trained off the repacking: once generation has repacked a layer, its kernel has no backward
    and LoRA adapters below it silently stop learning; unrepacked, bitsandbytes dequantises differentiably."""
    if not getattr(model, "is_loaded_in_4bit", False):
        return
    from bitsandbytes.nn import Linear4bit

    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False  # read by `Linear4bit.forward` before it repacks

"""What bitsandbytes' CPU kernel needs of a 4-bit model's layer sizes, checked when the model is loaded.

On CPUs with AVX512-BF16, bitsandbytes repacks each 4-bit weight for its CPU GEMM at the first forward in eval mode
without gradients (generation, evaluation): in blocks of 32 output features, with one scale per quantisation block
(64 input features by default) and row. A layer whose output size is not a multiple of 32, or whose input size is not
a multiple of the quantisation block, then fails deep inside bitsandbytes ("N must be divisible by block_n", or a
reshape error), after the model, the data and often a first training step have been paid for. On other CPUs the same
model runs, which is why the check applies only where the repacking does.
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
    """Raise a one-line `ValueError` naming the first 4-bit CPU layer whose sizes the repacking cannot take, and what
    to do instead; a no-op without 4-bit CPU layers or where bitsandbytes does not repack."""
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
    """Keep a model that is being trained off bitsandbytes' AVX512-BF16 CPU kernel.

    That kernel repacks a 4-bit weight at the layer's first forward in eval mode without gradients (generation) and
    from then on computes the layer with an inference-only kernel that has no backward: in every later training step
    the gradient stops silently at the frozen base layers, so LoRA adapters below them never learn. Switching the
    repacking off per layer keeps bitsandbytes' differentiable dequantise-and-matmul path (it is what other CPUs run).
    """
    if not getattr(model, "is_loaded_in_4bit", False):
        return
    from bitsandbytes.nn import Linear4bit

    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False  # read by `Linear4bit.forward` before it repacks

"""`trl_bon.quantization`: the layer sizes bitsandbytes' AVX512-BF16 CPU kernel needs, checked at load time.

The CPU is taken out of the test: whether bitsandbytes repacks (`cpu_repacks_4bit_weights`) is set both ways, so the
refusal and the pass are checked on every machine, whichever kernel it has.
"""

import pytest
import torch


pytest.importorskip("bitsandbytes")


def _save_llama(path, tokenizer, **sizes) -> str:
    from trl_bon.toy import tiny_causal_lm

    tiny_causal_lm(tokenizer, **sizes).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _load_4bit(path):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)
    return AutoModelForCausalLM.from_pretrained(path, quantization_config=quantization, device_map="cpu")


@pytest.fixture(scope="module")
def narrow_4bit_path(tmp_path_factory):
    """A Llama 16 wide (the default of `tiny_causal_lm`): 16 output features in its query projection."""
    from trl_bon.toy import build_bpe_tokenizer

    return _save_llama(tmp_path_factory.mktemp("narrow"), build_bpe_tokenizer())


@pytest.mark.parametrize("repacks", [True, False], ids=["avx512bf16", "other-cpu"])
def test_kit_sizes_fit_the_cpu_kernel(monkeypatch, tiny_kit, repacks):
    from trl_bon import quantization

    monkeypatch.setattr(quantization, "cpu_repacks_4bit_weights", lambda: repacks)
    model = _load_4bit(tiny_kit["policy"])
    assert model.is_loaded_in_4bit
    quantization.check_4bit_layer_sizes(model)  # every quantised layer of the kit is a multiple of 64 wide


def test_narrow_layer_refused_where_the_kernel_repacks(monkeypatch, narrow_4bit_path):
    from trl_bon import quantization

    model = _load_4bit(narrow_4bit_path)
    monkeypatch.setattr(quantization, "cpu_repacks_4bit_weights", lambda: False)
    quantization.check_4bit_layer_sizes(model)  # other CPUs run it: no error
    monkeypatch.setattr(quantization, "cpu_repacks_4bit_weights", lambda: True)
    with pytest.raises(ValueError) as error:
        quantization.check_4bit_layer_sizes(model)
    message = str(error.value)
    assert "\n" not in message
    assert "`model.layers.0.self_attn.q_proj` (16 → 16 features)" in message
    assert "multiples of 32" in message and 'llm_int8_skip_modules=["q_proj"]' in message


def test_unquantised_model_is_never_checked(monkeypatch, tiny_kit):
    from transformers import AutoModelForCausalLM

    from trl_bon import quantization

    def fail():
        raise AssertionError("the CPU was probed for a model that is not loaded in 4-bit")

    monkeypatch.setattr(quantization, "cpu_repacks_4bit_weights", fail)
    quantization.check_4bit_layer_sizes(AutoModelForCausalLM.from_pretrained(tiny_kit["policy"]))


def test_sampler_refuses_at_load(monkeypatch, narrow_4bit_path):
    """The sampler (evaluation, reference caches, BoN-SFT data) refuses right after loading, before sampling."""
    from transformers import BitsAndBytesConfig

    from trl_bon import quantization
    from trl_bon.sampling import load_causal_lm

    monkeypatch.setattr(quantization, "cpu_repacks_4bit_weights", lambda: True)
    kwargs = {"quantization_config": BitsAndBytesConfig(load_in_4bit=True), "device_map": "cpu"}
    with pytest.raises(ValueError, match=r"^4-bit layer `model\.layers\.0\.self_attn\.q_proj` \(16 → 16 features\)"):
        load_causal_lm(narrow_4bit_path, kwargs)


def test_trained_4bit_layers_stay_differentiable(tiny_kit):
    """A generation (eval mode, no gradients) must not switch a trained model's 4-bit layers to bitsandbytes'
    inference-only AVX512-BF16 kernel: the repacking is requested on every layer as such a CPU would, and after
    `keep_4bit_weights_trainable` the weights stay unpacked and a later training backward reaches every adapter."""
    from bitsandbytes.nn import Linear4bit
    from peft import LoraConfig, get_peft_model

    from trl_bon.quantization import keep_4bit_weights_trainable

    model = get_peft_model(_load_4bit(tiny_kit["policy"]), LoraConfig(r=4, target_modules="all-linear"))
    layers = [module for module in model.modules() if isinstance(module, Linear4bit)]
    assert layers and all(hasattr(layer, "support_avx512bf16_for_cpu") for layer in layers)  # bitsandbytes' switch
    for layer in layers:
        layer.support_avx512bf16_for_cpu = True
    keep_4bit_weights_trainable(model)
    ids = torch.tensor([[5, 6, 7, 8]])
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    assert not any(getattr(layer.weight.quant_state, "packing_format_for_cpu", False) for layer in layers)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    lora_b = {name: p.grad for name, p in model.named_parameters() if "lora_B" in name}
    assert lora_b and all(grad is not None and grad.abs().sum() > 0 for grad in lora_b.values())

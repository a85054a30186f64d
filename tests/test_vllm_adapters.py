"""`trl_bon.vllm_adapters` parts that need no vLLM: the engine's LoRA limits and the refusals (the serving itself is
tested by the engines tier, `tests/engines/test_engines.py::test_vllm_colocate_jbond_adapters_served_as_lora`)."""

import pytest
from peft import LoraConfig

from trl_bon.vllm_adapters import check_adapter_servable


@pytest.mark.parametrize(("rank", "max_rank"), [(1, 1), (4, 8), (16, 16), (17, 32), (320, 320), (321, 512)])
def test_engine_rank_is_the_smallest_vllm_accepts(rank, max_rank):
    assert check_adapter_servable(LoraConfig(r=rank)) == {
        "enable_lora": True,
        "max_lora_rank": max_rank,
        "max_loras": 2,
    }


def test_rank_above_vllms_largest_is_refused():
    with pytest.raises(ValueError, match="ranks up to 512; lower `r` \\(got 513\\)"):
        check_adapter_servable(LoraConfig(r=513))


def test_plain_lora_is_servable():
    servable = LoraConfig(r=16, target_modules="all-linear")
    assert check_adapter_servable(servable) == {"enable_lora": True, "max_lora_rank": 16, "max_loras": 2}

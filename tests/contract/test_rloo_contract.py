"""Contract tests: the TRL 1.16 internals trl-bon wraps (`trl_bon/_trl_compat.py`).

A failure here means TRL changed something a trainer relies on via `trl_bon._trl_compat`: fix the compat layer (and
the trainers) before raising the TRL cap in pyproject.toml.
"""

import dataclasses
import inspect
import warnings

import pytest
import torch

from tests.helpers import cpu_args


PROMPTS = ["the cat sat", "tell me a story"]

# Exact parameter names of the private TRL callables trl-bon wraps or calls, as found in TRL 1.16.0.
PINNED_RLOO_HOOKS = {
    "_generate_single_turn": ["self", "prompt_ids", "images", "multimodal_fields"],
    "_calculate_rewards": ["self", "inputs", "prompts", "completions", "completion_ids_list"],
    "_generate_and_score_completions": ["self", "inputs"],
    "_compute_loss": ["self", "model", "inputs"],
    "_get_per_token_logps_and_entropies": [
        "self",
        "model",
        "input_ids",
        "attention_mask",
        "logits_to_keep",
        "batch_size",
        "compute_entropy",
        "compute_aux_loss",
        "pixel_values",
        "image_grid_thw",
        "num_images",
        "pixel_attention_mask",
        "spatial_shapes",
        "num_tiles",
        "image_sizes",
        "token_type_ids",
        "mm_token_type_ids",
        "image_position_ids",
    ],
}


def _params(func) -> list[str]:
    return list(inspect.signature(func).parameters)


# ---------------------------------------------------------------------------------------------------------------------
# Signatures
# ---------------------------------------------------------------------------------------------------------------------


def test_wrapped_hooks_are_pinned():
    from trl_bon._trl_compat import WRAPPED_RLOO_HOOKS

    assert set(WRAPPED_RLOO_HOOKS) == set(PINNED_RLOO_HOOKS)


@pytest.mark.parametrize("hook", sorted(PINNED_RLOO_HOOKS))
def test_rloo_hook_signatures(hook):
    from trl import RLOOTrainer

    assert _params(getattr(RLOOTrainer, hook)) == PINNED_RLOO_HOOKS[hook]


def test_public_rloo_signatures():
    from trl import RLOOTrainer

    assert _params(RLOOTrainer.compute_loss) == ["self", "model", "inputs", "return_outputs", "num_items_in_batch"]
    init = _params(RLOOTrainer.__init__)
    for name in ("model", "reward_funcs", "args", "train_dataset", "processing_class", "peft_config"):
        assert name in init


def test_helper_signatures():
    from trl_bon._trl_compat import VLLMGeneration, add_fused_lm_head, use_adapter

    assert _params(use_adapter) == ["model", "adapter_name"]
    assert _params(add_fused_lm_head) == ["model", "temperature", "cast_lm_head_to_fp32", "outputs"]
    assert _params(VLLMGeneration.generate) == ["self", "prompts", "images", "num_generations", "profiler"]
    assert _params(VLLMGeneration.sync_weights) == ["self"]


def test_vllm_engine_kwargs_reach_the_colocated_engine(monkeypatch):
    """`vllm_adapters_as_lora` adds `vllm.LLM` arguments through `vllm_engine_kwargs`, which relies on TRL building
    its colocated engine through the module-level name `LLM` of `trl.generation.vllm_generation`."""
    from trl.generation import vllm_generation

    from trl_bon._trl_compat import VLLMGeneration, vllm_engine_kwargs

    assert "LLM" in VLLMGeneration._init_vllm.__code__.co_names
    built = []
    monkeypatch.setattr(vllm_generation, "LLM", lambda **kwargs: built.append(kwargs), raising=False)
    original = vllm_generation.LLM
    with vllm_engine_kwargs(enable_lora=True, max_lora_rank=16):
        vllm_generation.LLM(model="m", seed=0)
    assert vllm_generation.LLM is original  # put back after the block
    assert built == [{"model": "m", "seed": 0, "enable_lora": True, "max_lora_rank": 16}]


def test_rloo_config_has_no_importance_sampling_correction():
    from trl import RLOOConfig

    names = [f.name for f in dataclasses.fields(RLOOConfig)]
    assert not [n for n in names if "importance" in n or "vllm_importance" in n]
    # sanity: the scan does see the vLLM and reference-sync fields
    assert "use_vllm" in names and "sync_ref_model" in names and "beta" in names


def test_check_trl_version(monkeypatch):
    import trl

    from trl_bon._trl_compat import check_trl_version

    assert trl.__version__.startswith("1.16.")
    monkeypatch.setattr(trl, "__version__", "1.16.0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_trl_version()  # silent
    for outside in ("1.17.0", "1.15.9"):
        monkeypatch.setattr(trl, "__version__", outside)
        with pytest.warns(UserWarning, match=f"trl {outside} is installed"):
            check_trl_version()


def test_use_adapter_disables_and_restores_adapters(tiny_kit):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trl_bon._trl_compat import use_adapter

    base = AutoModelForCausalLM.from_pretrained(tiny_kit["policy"], local_files_only=True)
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
    model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.5)
        adapted = model(input_ids=ids).logits
        with use_adapter(model, adapter_name=None):
            disabled = model(input_ids=ids).logits
        restored = model(input_ids=ids).logits
    assert not torch.allclose(adapted, base_logits)
    torch.testing.assert_close(disabled, base_logits)
    torch.testing.assert_close(restored, adapted)


# ---------------------------------------------------------------------------------------------------------------------
# Behaviour of a real RLOOTrainer on the tiny kit
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rloo_trainer(tiny_kit, prompt_dataset, tmp_path_factory):
    from trl import RLOOConfig, RLOOTrainer

    args = RLOOConfig(
        output_dir=str(tmp_path_factory.mktemp("rloo")),
        **cpu_args(),
        max_completion_length=4,
        per_device_train_batch_size=4,
        num_generations=2,
        max_steps=1,
    )
    trainer = RLOOTrainer(
        model=tiny_kit["policy"], reward_funcs=tiny_kit["reward"], args=args, train_dataset=prompt_dataset
    )
    trainer.model.train()
    return trainer


@pytest.fixture(scope="module")
def generation_output(rloo_trainer):
    torch.manual_seed(0)
    batch = [{"prompt": p} for p in PROMPTS for _ in range(2)]  # each prompt num_generations = 2 times, grouped
    return rloo_trainer._generate_and_score_completions(batch)


def test_generation_output_keys_and_shapes(rloo_trainer, generation_output):
    from trl_bon._trl_compat import GENERATION_OUTPUT_KEYS

    out = generation_output
    assert rloo_trainer.model.training
    for key in GENERATION_OUTPUT_KEYS:
        assert key in out, key
    b = 2 * len(PROMPTS)
    assert out["prompt_ids"].dim() == 2 and out["prompt_ids"].shape[0] == b
    assert out["prompt_mask"].shape == out["prompt_ids"].shape
    assert out["completion_ids"].dim() == 2 and out["completion_ids"].shape[0] == b
    assert 1 <= out["completion_ids"].shape[1] <= 4  # max_completion_length
    assert out["completion_mask"].shape == out["completion_ids"].shape
    assert out["old_logps"].shape == (b,)  # sequence-level: summed over completion tokens
    assert out["advantages"].shape == (b,)
    assert torch.isfinite(out["old_logps"]).all() and (out["old_logps"] <= 0).all()
    # left-padded prompts: the mask's last column is all ones
    assert out["prompt_mask"][:, -1].all()
    # RLOO's leave-one-out advantages sum to zero within each group of num_generations (normalisation is off)
    assert not rloo_trainer.normalize_advantages
    torch.testing.assert_close(out["advantages"].view(-1, 2).sum(-1), torch.zeros(len(PROMPTS)), atol=1e-5, rtol=0)


def test_old_logps_match_a_fresh_forward(rloo_trainer, generation_output):
    out = generation_output
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    with torch.no_grad():
        per_token, _, _ = rloo_trainer._get_per_token_logps_and_entropies(
            rloo_trainer.model, ids, mask, out["completion_ids"].shape[1]
        )
    assert per_token.shape == out["completion_ids"].shape
    torch.testing.assert_close((per_token * out["completion_mask"]).sum(1), out["old_logps"], atol=1e-5, rtol=1e-5)


def test_compute_loss_reaches_private_compute_loss(rloo_trainer, generation_output, monkeypatch):
    calls = []
    original = rloo_trainer._compute_loss

    def counting(model, inputs):
        calls.append(inputs)
        return original(model, inputs)

    monkeypatch.setattr(rloo_trainer, "_compute_loss", counting)
    loss = rloo_trainer.compute_loss(rloo_trainer.model, dict(generation_output))
    assert len(calls) == 1 and torch.isfinite(loss) and loss.dim() == 0


def _gradients(trainer, inputs):
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    loss = trainer.compute_loss(trainer.model, inputs)
    return torch.autograd.grad(loss, params, allow_unused=True)


def test_zero_advantages_give_zero_gradient(rloo_trainer, generation_output):
    inputs = dict(generation_output)
    inputs["advantages"] = torch.zeros_like(inputs["advantages"])
    grads = _gradients(rloo_trainer, inputs)
    assert all(g is None or g.abs().max().item() == 0.0 for g in grads)
    # control: with non-zero advantages the same call does produce a gradient
    inputs["advantages"] = torch.tensor([1.0, -1.0, 0.5, -0.5])
    grads = _gradients(rloo_trainer, inputs)
    assert any(g is not None and g.abs().max().item() > 0 for g in grads)


def test_vllm_weight_sync_contract(rloo_trainer, monkeypatch):
    """With a mocked vLLM backend: weights sync once per optimiser step (`_last_loaded_step`), then `generate`."""
    sync_calls, generate_calls = [], []

    class FakeVLLM:
        def sync_weights(self):
            sync_calls.append(rloo_trainer.state.global_step)

        def generate(self, prompts, images, num_generations, profiler):
            generate_calls.append((prompts, num_generations))
            return prompts, [[7] for _ in prompts], None, None

    monkeypatch.setattr(rloo_trainer, "use_vllm", True)
    monkeypatch.setattr(rloo_trainer, "vllm_generation", FakeVLLM(), raising=False)
    monkeypatch.setattr(rloo_trainer, "_last_loaded_step", -1, raising=False)
    monkeypatch.setattr(rloo_trainer.state, "global_step", 0)
    prompt_ids = [[5, 6], [7]]
    assert rloo_trainer._generate_single_turn(prompt_ids, None, {}) == [[7], [7]]
    rloo_trainer._generate_single_turn(prompt_ids, None, {})  # same step: no second sync
    assert sync_calls == [0] and rloo_trainer._last_loaded_step == 0
    rloo_trainer.state.global_step = 1
    rloo_trainer._generate_single_turn(prompt_ids, None, {})
    assert sync_calls == [0, 1]
    assert generate_calls[0] == (prompt_ids, rloo_trainer.num_generations) and len(generate_calls) == 3


def test_peft_with_sync_ref_model_still_raises(tiny_kit, prompt_dataset, tmp_path):
    """If this stops raising, TRL PR #6975 (EMA-synced "ref" adapter) landed: evaluate native anchor sync."""
    from peft import LoraConfig
    from trl import RLOOConfig, RLOOTrainer

    args = RLOOConfig(
        output_dir=str(tmp_path),
        **cpu_args(),
        max_completion_length=4,
        per_device_train_batch_size=4,
        num_generations=2,
        max_steps=1,
        sync_ref_model=True,
    )
    assert args.beta != 0.0  # otherwise the beta = 0 ValueError would fire first
    with pytest.raises(NotImplementedError, match="sync_ref_model"):
        RLOOTrainer(
            model=tiny_kit["policy"],
            reward_funcs=tiny_kit["reward"],
            args=args,
            train_dataset=prompt_dataset,
            peft_config=LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]),
        )


def test_scoring_makes_one_policy_forward_at_beta_zero(tiny_kit, prompt_dataset, tmp_path, monkeypatch):
    """JBondTrainer keeps the per-token log-probs of the first `_get_per_token_logps_and_entropies` call made inside
    `_generate_and_score_completions` as the policy's: at beta = 0 RLOO must make exactly that one call, with the
    policy, and its masked sum must be `old_logps`."""
    from trl import RLOOConfig, RLOOTrainer

    args = RLOOConfig(
        output_dir=str(tmp_path),
        **cpu_args(),
        max_completion_length=4,
        per_device_train_batch_size=4,
        num_generations=2,
        max_steps=1,
        beta=0.0,
    )
    trainer = RLOOTrainer(
        model=tiny_kit["policy"], reward_funcs=tiny_kit["reward"], args=args, train_dataset=prompt_dataset
    )
    trainer.model.train()
    calls = []
    original = trainer._get_per_token_logps_and_entropies

    def recording(model, *call_args, **kwargs):
        output = original(model, *call_args, **kwargs)
        calls.append((model, output[0]))
        return output

    monkeypatch.setattr(trainer, "_get_per_token_logps_and_entropies", recording)
    out = trainer._generate_and_score_completions([{"prompt": p} for p in PROMPTS for _ in range(2)])
    assert len(calls) == 1
    model, per_token = calls[0]
    assert model is trainer.model
    torch.testing.assert_close((per_token * out["completion_mask"]).sum(1), out["old_logps"])


def test_scoring_forwards_are_policy_then_reference_before_rewards(rloo_trainer, monkeypatch):
    """VBoNTrainer ("exact") reads the reference log-probs from the second scoring forward: at beta != 0 RLOO must
    run the policy forward, then the reference forward, both before `_calculate_rewards`."""
    assert rloo_trainer.beta != 0 and rloo_trainer.ref_model is not None
    events = []
    forward, rewards = rloo_trainer._get_per_token_logps_and_entropies, rloo_trainer._calculate_rewards

    def recording_forward(model, *call_args, **kwargs):
        events.append(("forward", model))
        return forward(model, *call_args, **kwargs)

    def recording_rewards(*call_args, **kwargs):
        events.append(("rewards", None))
        return rewards(*call_args, **kwargs)

    monkeypatch.setattr(rloo_trainer, "_get_per_token_logps_and_entropies", recording_forward)
    monkeypatch.setattr(rloo_trainer, "_calculate_rewards", recording_rewards)
    rloo_trainer._generate_and_score_completions([{"prompt": p} for p in PROMPTS for _ in range(2)])
    assert [kind for kind, _ in events] == ["forward", "forward", "rewards"]
    assert events[0][1] is rloo_trainer.model and events[1][1] is rloo_trainer.ref_model


# ---------------------------------------------------------------------------------------------------------------------
# J-BOND's policy-rows-only scoring (`POLICY_ROWS_SCORING_SEAM`, `trl_bon/trainer/_scoring_forwards.py`)
# ---------------------------------------------------------------------------------------------------------------------


def test_policy_rows_scoring_seam_is_pinned():
    from trl import RLOOTrainer

    from trl_bon._trl_compat import POLICY_ROWS_SCORING_SEAM

    assert POLICY_ROWS_SCORING_SEAM == ("_generate_and_score_completions", "_prepare_inputs", "_compute_loss")
    assert _params(RLOOTrainer._prepare_inputs) == ["self", "generation_batch"]


def test_prepare_inputs_carries_an_extra_per_row_key_to_the_loss(rloo_trainer, generation_output, monkeypatch):
    """A per-row key added to the generation batch reaches `_compute_loss` beside its rows (shuffled alike)."""
    batch = dict(generation_output)
    batch["row_tag"] = torch.arange(batch["old_logps"].numel())
    monkeypatch.setattr(rloo_trainer, "_generate_and_score_completions", lambda inputs: dict(batch))
    monkeypatch.setattr(rloo_trainer, "_step", 0)
    monkeypatch.setattr(rloo_trainer, "_buffered_inputs", None)
    inputs = rloo_trainer._prepare_inputs([{"prompt": p} for p in PROMPTS for _ in range(2)])
    assert sorted(inputs["row_tag"].tolist()) == list(range(batch["old_logps"].numel()))
    torch.testing.assert_close(inputs["old_logps"], batch["old_logps"][inputs["row_tag"]], rtol=0, atol=0)


def test_rloo_attributes_the_scoring_forwards_read(rloo_trainer):
    """`ScoringForwardsMixin` divides the logits `generate` sampled with by `temperature` (as RLOO's own forward does)
    and keeps every row when `aux_loss_enabled` (RLOO adds that loss unscaled)."""
    assert rloo_trainer.temperature == rloo_trainer.args.temperature
    assert rloo_trainer.aux_loss_enabled is False  # a dense model
    assert isinstance(rloo_trainer.use_vllm, bool) and isinstance(
        rloo_trainer.use_transformers_continuous_batching, bool
    )


def test_compute_loss_is_a_mean_over_rows_where_weight_0_rows_count_nothing(rloo_trainer, generation_output):
    """`ScoringForwardsMixin._rows_with_weight` drops the rows whose advantage is 0 from the loss forward and scales
    the loss by the fraction kept: exact only while RLOO's loss is a plain mean over rows of per-row terms ∝ w."""
    inputs = dict(generation_output)
    inputs["advantages"] = torch.tensor([1.5, 0.0, -0.5, 0.0])
    loss = rloo_trainer._compute_loss(rloo_trainer.model, inputs)
    expected = _gradients(rloo_trainer, inputs)
    rows = torch.tensor([0, 2])
    kept = {key: value[rows] if torch.is_tensor(value) and value.dim() else value for key, value in inputs.items()}
    kept_loss = rloo_trainer._compute_loss(rloo_trainer.model, kept) * 0.5
    torch.testing.assert_close(kept_loss, loss, atol=1e-6, rtol=1e-6)
    params = [p for p in rloo_trainer.model.parameters() if p.requires_grad]
    gradients = torch.autograd.grad(kept_loss, params, allow_unused=True)
    assert any(g is not None and g.abs().max() > 0 for g in expected)
    for gradient, reference in zip(gradients, expected, strict=True):
        if reference is not None:
            torch.testing.assert_close(gradient, reference, atol=1e-6, rtol=1e-5)


def test_compute_loss_reads_log_probs_through_the_ratio_only(rloo_trainer, generation_output, monkeypatch):
    """A row whose `old_logps` is 0 and whose loss-forward log-probs are p − sg(p) has RLOO's gradient at ratio 1."""
    inputs = dict(generation_output)
    inputs["advantages"] = torch.tensor([1.0, -1.0, 0.5, -0.5])
    expected = _gradients(rloo_trainer, inputs)
    skipped = torch.tensor([False, True, False, True])
    forward = rloo_trainer._get_per_token_logps_and_entropies

    def zero_valued(model, *call_args, **kwargs):
        logps, *rest = forward(model, *call_args, **kwargs)
        return (torch.where(skipped[:, None], logps - logps.detach(), logps), *rest)

    monkeypatch.setattr(rloo_trainer, "_get_per_token_logps_and_entropies", zero_valued)
    inputs["old_logps"] = inputs["old_logps"].masked_fill(skipped, 0.0)
    gradients = _gradients(rloo_trainer, inputs)
    assert any(g is not None and g.abs().max() > 0 for g in expected)
    for gradient, reference in zip(gradients, expected, strict=True):
        if reference is not None:
            torch.testing.assert_close(gradient, reference, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# RLOO state the trainers rewrite (`RLOO_STATE_ATTRIBUTES`, `trl_bon/trainer/_rloo_seams.py`)
# ---------------------------------------------------------------------------------------------------------------------


def test_rloo_state_attributes_exist_with_their_kinds(rloo_trainer):
    from collections import deque

    from trl_bon._trl_compat import RLOO_STATE_ATTRIBUTES

    assert set(RLOO_STATE_ATTRIBUTES) == {
        "num_generations",
        "num_generations_eval",
        "model_wrapped",
        "reward_funcs",
        "_name",
        "_last_loaded_step",
        "_metrics",
        "_logs",
    }
    trainer = rloo_trainer
    assert isinstance(trainer.num_generations, int) and isinstance(trainer.num_generations_eval, int)
    assert isinstance(trainer.model_wrapped, torch.nn.Module)
    assert isinstance(trainer.reward_funcs, list) and len(trainer.reward_funcs) == len(trainer.reward_func_names)
    assert isinstance(trainer._name, str)
    assert set(trainer._metrics) == {"train", "eval"} and trainer._metrics["train"]["never_logged"] == []
    assert isinstance(trainer._logs["advantages"], deque) and isinstance(trainer._logs["rewards"]["any"], deque)


def test_rloo_reads_the_rewritten_state_at_call_time(rloo_trainer, monkeypatch):
    """`_generate_single_turn` reads `num_generations` (vLLM) and `model_wrapped` (transformers) when it runs, and
    `_calculate_rewards` reads `reward_funcs`: a rewrite for the length of a call is seen by that call."""
    from trl_bon.trainer._rloo_seams import force_vllm_weight_sync, rloo_group_size, rloo_reward_funcs

    calls = []

    class FakeVLLM:
        def sync_weights(self):
            calls.append("sync")

        def generate(self, prompts, images, num_generations, profiler):
            calls.append(num_generations)
            return prompts, [[7] for _ in prompts], None, None

    monkeypatch.setattr(rloo_trainer, "use_vllm", True)
    monkeypatch.setattr(rloo_trainer, "vllm_generation", FakeVLLM(), raising=False)
    monkeypatch.setattr(rloo_trainer, "_last_loaded_step", rloo_trainer.state.global_step, raising=False)
    with rloo_group_size(rloo_trainer, 5):
        rloo_trainer._generate_single_turn([[5, 6]], None, {})
    force_vllm_weight_sync(rloo_trainer)
    rloo_trainer._generate_single_turn([[5, 6]], None, {})
    assert calls == [5, "sync", rloo_trainer.num_generations]
    monkeypatch.undo()

    def constant(completions, **kwargs):
        return [0.25] * len(completions)

    with rloo_reward_funcs(rloo_trainer, [constant]):
        rewards = rloo_trainer._calculate_rewards([{"prompt": "a"}], ["a"], ["b"], [[7]])
    assert rewards.tolist() == [[0.25]]
    assert rloo_trainer.reward_funcs[0] is not constant


def test_rloo_generates_with_model_wrapped(rloo_trainer):
    import copy

    from trl_bon.trainer._rloo_seams import rloo_generation_model

    other = copy.deepcopy(rloo_trainer.model)
    calls, class_generate = [], other.generate

    def recording_generate(*args, **kwargs):
        calls.append(kwargs)
        return class_generate(*args, **kwargs)

    other.generate = recording_generate
    policy = rloo_trainer.model_wrapped
    with rloo_generation_model(rloo_trainer, other):
        completions = rloo_trainer._generate_single_turn([[5, 6]], None, {})
    assert len(calls) == 1 and len(completions) == 1
    assert rloo_trainer.model_wrapped is policy
    with pytest.raises(RuntimeError, match="inside"), rloo_generation_model(rloo_trainer, other):
        raise RuntimeError("inside")
    assert rloo_trainer.model_wrapped is policy  # restored on an exception too


def test_model_card_reads_name(rloo_trainer, tmp_path, monkeypatch):
    from trl_bon.trainer._rloo_seams import trainer_name

    monkeypatch.setattr(rloo_trainer.args, "output_dir", str(tmp_path))
    with trainer_name(rloo_trainer, "Renamed-Method"):
        rloo_trainer.create_model_card()
    assert "Renamed-Method" in (tmp_path / "README.md").read_text()
    assert rloo_trainer._name == "RLOO"


def test_rloo_logs_what_the_seams_replace(rloo_trainer, generation_output):
    """`_generate_and_score_completions` appends one value per batch to `_metrics[mode]["reward"]` (and the other
    reward metrics `BoNRLOOTrainer._log_policy_rewards` replaces) and one entry per row to the completions table's
    columns."""
    metrics = rloo_trainer._metrics["train"]
    for name in ("reward", "reward_std", "rewards/reward/mean", "rewards/reward/std"):
        assert len(metrics[name]) >= 1, name
    rows = generation_output["advantages"].numel()
    assert len(rloo_trainer._logs["advantages"]) >= rows
    assert len(rloo_trainer._logs["rewards"]["reward"]) >= rows

"""JBondTrainer / JBondConfig on the offline tiny kit (CPU): steps, anchor EMA, γ, quantised bases, resume, errors."""

import math
import warnings

import pytest
import torch

from tests.helpers import cpu_args


pytestmark = pytest.mark.slow

ETA = 0.3  # a large EMA rate makes the anchor's move easy to check


def token_sum_reward(completion_ids, **kwargs):
    """A deterministic, non-constant reward on the tiny kit."""
    return [float(sum(ids) % 7) + 0.1 * len(ids) for ids in completion_ids]


def _config(tmp_path, **overrides):
    from trl_bon import JBondConfig

    kwargs = cpu_args(
        output_dir=str(tmp_path),
        max_completion_length=6,
        per_device_train_batch_size=6,
        max_steps=1,
        learning_rate=0.1,  # tiny model: gradients are tiny
        gradient_checkpointing=False,
    )
    kwargs.update(overrides)
    return JBondConfig(**kwargs)


def _lora():
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)


def _trainer(tiny_kit, prompt_dataset, args, **kwargs):
    from trl_bon import JBondTrainer

    return JBondTrainer(
        model=tiny_kit["policy"], reward_funcs=token_sum_reward, args=args, train_dataset=prompt_dataset, **kwargs
    )


def _lora_tensors(model, adapter):
    return {name: p.detach().clone() for name, p in model.named_parameters() if f".{adapter}." in name}


class TestJBondConfig:
    def test_defaults(self, tmp_path):
        from trl_bon import JBondConfig

        args = JBondConfig(**cpu_args(output_dir=str(tmp_path)))
        assert (args.num_generations, args.per_device_train_batch_size) == (3, 6)
        assert (args.beta, args.anchor, args.num_candidates, args.jeffreys_beta) == (0.0, "ema", 2, 0.5)
        assert args.jbond_penalty == pytest.approx(math.log(16))
        bond = JBondConfig(**cpu_args(output_dir=str(tmp_path), mode="bond", num_candidates=4))
        assert (bond.num_generations, bond.anchor) == (17, "fixed")

    @pytest.mark.parametrize(
        ("overrides", "fix"),
        [
            ({"jeffreys_beta": 1.5}, "`jeffreys_beta` must lie in [0, 1]"),
            ({"anchor_ema_rate": -0.1}, "`anchor_ema_rate` (η) must lie in [0, 1]"),
            ({"anchor_kl_coef": -1.0}, "Set 0 to disable"),
            ({"beta": 0.05}, "Set `beta=0.0`"),
            ({"mode": "bond"}, "set e.g. `num_candidates=4`"),
            ({"mode": "bond", "num_candidates": 1}, "set e.g. `num_candidates=4`"),
            ({"mode": "bond", "num_candidates": 8, "num_quantile_samples": 4}, "Raise `num_quantile_samples`"),
            ({"num_candidates": 4}, "set `mode='bond'`"),
            ({"num_generations": 2}, "Leave `num_generations` unset"),
            ({"per_device_train_batch_size": 4}, "Set `per_device_train_batch_size` to a multiple of 3"),
            ({"per_device_train_batch_size": 3}, "at least 6 or `baseline='none'`"),
            ({"num_iterations": 2}, "Set `num_iterations=1`"),
            ({"steps_per_generation": 2}, "Leave `steps_per_generation`"),
            ({"normalize_advantages": True}, "Set `normalize_advantages=False`"),
            ({"anchor": "slow"}, "set `anchor` to one of"),
            ({"baseline": "per_prompt_loo"}, "set `baseline` to one of"),
            ({"loss_normalization": "mean"}, "set `loss_normalization` to one of"),
            ({"mode": "bond", "num_candidates": 2, "quantile_smoothing": "none"}, "set `quantile_smoothing` to"),
            ({"num_generations_eval": 2}, "Leave it unset"),
            (
                {"use_vllm": True, "model_init_kwargs": {"quantization_config": {"load_in_8bit": True}}},
                "Load the base in 4-bit",
            ),
        ],
    )
    def test_validation_names_the_fix(self, tmp_path, overrides, fix):
        from trl_bon import JBondConfig

        with pytest.raises(ValueError) as error:
            JBondConfig(**cpu_args(output_dir=str(tmp_path), **overrides))
        assert fix in str(error.value)

    def test_batch_loo_can_be_disabled_for_one_prompt(self, tmp_path):
        from trl_bon import JBondConfig

        assert JBondConfig(**cpu_args(output_dir=str(tmp_path), per_device_train_batch_size=3, baseline="none"))


class TestJBondTrainerValidation:
    """Errors raised by the trainer before any model is loaded (a bogus model path proves nothing was loaded)."""

    def test_dataset_without_prompt_column(self, tmp_path):
        from datasets import Dataset

        from trl_bon import JBondTrainer

        with pytest.raises(ValueError, match="Rename your prompt column to `prompt`"):
            JBondTrainer("no/such/model", token_sum_reward, _config(tmp_path), Dataset.from_dict({"text": ["a"]}))

    def test_empty_dataset(self, tmp_path):
        from datasets import Dataset

        from trl_bon import JBondTrainer

        with pytest.raises(ValueError, match="pass at least one prompt"):
            JBondTrainer("no/such/model", token_sum_reward, _config(tmp_path), Dataset.from_dict({"prompt": []}))

    def test_8bit_with_vllm(self, tmp_path, prompt_dataset):
        from transformers import BitsAndBytesConfig

        from trl_bon import JBondTrainer

        args = _config(tmp_path, use_vllm=True)
        with pytest.raises(ValueError, match="Load the base in 4-bit"):
            JBondTrainer(
                "no/such/model",
                token_sum_reward,
                args,
                prompt_dataset,
                quantization_config=BitsAndBytesConfig(load_in_8bit=True),
                peft_config=_lora(),
            )

    def test_full_finetuning_with_vllm(self, tmp_path, prompt_dataset):
        from trl_bon import JBondTrainer

        with pytest.raises(NotImplementedError, match="peft_config=LoraConfig"):
            JBondTrainer("no/such/model", token_sum_reward, _config(tmp_path, use_vllm=True), prompt_dataset)

    @pytest.mark.parametrize(
        ("overrides", "fix"),
        [
            ({}, "set `use_vllm=True, vllm_mode='colocate'`"),
            ({"use_vllm": True, "vllm_mode": "server"}, "set `use_vllm=True, vllm_mode='colocate'`"),
            ({"use_vllm": True, "vllm_tensor_parallel_size": 2}, "vllm_tensor_parallel_size=1"),
            ({"use_vllm": True, "vllm_enable_sleep_mode": True}, "without `vllm_enable_sleep_mode`"),
            ({"use_vllm": True, "fsdp": "full_shard"}, "tested under DDP only"),
        ],
    )
    def test_vllm_adapters_as_lora_needs_colocate_ddp(self, tmp_path, overrides, fix):
        with pytest.raises(ValueError, match=fix):
            _config(tmp_path, vllm_adapters_as_lora=True, **overrides)

    @pytest.mark.parametrize(
        ("lora", "fix"),
        [
            ({"use_dora": True}, "does not serve DoRA"),
            ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
            ({"r": 1024}, "ranks up to 512"),
        ],
    )
    def test_vllm_adapters_as_lora_refuses_unservable_adapters(self, tmp_path, prompt_dataset, lora, fix):
        """Before any model or engine loads (the model path does not exist)."""
        from peft import LoraConfig

        from trl_bon import JBondTrainer

        args = _config(tmp_path, use_vllm=True, vllm_adapters_as_lora=True)
        peft_config = LoraConfig(**{"r": 4, "target_modules": ["q_proj", "v_proj"], **lora})
        with pytest.raises(ValueError, match=fix):
            JBondTrainer("no/such/model", token_sum_reward, args, prompt_dataset, peft_config=peft_config)

    def test_vllm_adapters_as_lora_refuses_a_quantized_base(self, tmp_path, prompt_dataset):
        from transformers import BitsAndBytesConfig

        from trl_bon import JBondTrainer

        args = _config(tmp_path, use_vllm=True, vllm_adapters_as_lora=True)
        with pytest.raises(ValueError, match="unquantised base only"):
            JBondTrainer(
                "no/such/model", token_sum_reward, args, prompt_dataset, peft_config=_lora(),
                quantization_config=BitsAndBytesConfig(load_in_4bit=True),
            )  # fmt: skip

    @pytest.mark.parametrize(("value", "fix"), [(float("nan"), "return a number"), (float("inf"), "clip or fix")])
    def test_bad_rewards_raise(self, tmp_path, tiny_kit, prompt_dataset, value, fix):
        from trl_bon import JBondTrainer

        def flaky_reward(completion_ids, **kwargs):
            return [value if i == 1 else 1.0 for i in range(len(completion_ids))]

        trainer = JBondTrainer(tiny_kit["policy"], flaky_reward, _config(tmp_path), prompt_dataset)
        with pytest.raises(ValueError, match=fix) as error:
            trainer.train()
        assert "flaky_reward" in str(error.value)


class TestJBondTrainer:
    def test_one_step_full_finetuning(self, tmp_path, tiny_kit, prompt_dataset):
        trainer = _trainer(tiny_kit, prompt_dataset, _config(tmp_path, anchor_ema_rate=ETA))
        before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
        anchor_before = {name: p.detach().clone() for name, p in trainer._anchor_model.named_parameters()}
        trainer.train()
        assert trainer.state.log_history[-1]["train_loss"] is not None
        metrics = next(log for log in trainer.state.log_history if "jbond/reward/policy" in log)
        assert 0 < metrics["jbond/time/generation"] < 60 and 0 < metrics["jbond/time/scoring"] < 60
        assert metrics["jbond/kl_anchor"] == 0.0  # the anchor equals the policy before the first step
        for name, param in trainer.model.named_parameters():
            assert not torch.equal(param, before[name]), f"{name} did not change"
        for name, anchor in trainer._anchor_model.named_parameters():
            assert not anchor.requires_grad
            torch.testing.assert_close(anchor_before[name], before[name], rtol=0, atol=0)  # anchor started at π_ref
            expected = (1 - ETA) * anchor_before[name] + ETA * dict(trainer.model.named_parameters())[name]
            torch.testing.assert_close(anchor, expected, rtol=1e-6, atol=1e-7)

    def test_one_step_lora(self, tmp_path, tiny_kit, prompt_dataset):
        trainer = _trainer(tiny_kit, prompt_dataset, _config(tmp_path, anchor_ema_rate=ETA), peft_config=_lora())
        model = trainer.model
        base = {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" not in name}
        policy_before, anchor_before = _lora_tensors(model, "default"), _lora_tensors(model, "anchor")
        trainer.train()
        policy_after, anchor_after = _lora_tensors(model, "default"), _lora_tensors(model, "anchor")
        for name, param in model.named_parameters():
            if "lora_" not in name:
                assert torch.equal(param, base[name]), f"base weight {name} changed"
        changed = [name for name in policy_after if not torch.equal(policy_after[name], policy_before[name])]
        # A fresh LoRA has B = 0, so one step moves every B but no A (their gradient is ∝ B).
        assert changed and all("lora_B" in name for name in changed)
        assert all(name in changed for name in policy_after if "lora_B" in name)
        for name, anchor in anchor_after.items():
            policy_name = name.replace(".anchor.", ".default.")
            torch.testing.assert_close(anchor_before[name], policy_before[policy_name], rtol=0, atol=0)
            expected = (1 - ETA) * anchor_before[name] + ETA * policy_after[policy_name]
            torch.testing.assert_close(anchor, expected, rtol=1e-6, atol=1e-7)
        assert not any(p.requires_grad for n, p in model.named_parameters() if ".anchor." in n)

    def test_weights_layout_and_loss_gradient(self, tmp_path, tiny_kit, prompt_dataset):
        """Slot layout of the weights, and RLOO's loss at ratio 1 = −mean(w·Σ_t log π) in value *and* gradient."""
        trainer = _trainer(tiny_kit, prompt_dataset, _config(tmp_path, per_device_train_batch_size=12))
        trainer.model.train()
        inputs = [{"prompt": prompt} for prompt in prompt_dataset["prompt"][:4] for _ in range(3)]  # 4 groups of 3
        out = trainer._generate_and_score_completions(inputs)
        weights = out["advantages"].view(-1, 3)
        beta = trainer.args.jeffreys_beta
        anchor_weights = weights[:, 1:]
        # Exactly one anchor slot per prompt carries the SFT weight (1 − β)·num_generations, the other 0.
        assert torch.equal((anchor_weights != 0).sum(1), torch.ones(4, dtype=torch.long))
        torch.testing.assert_close(anchor_weights.sum(1), torch.full((4,), (1 - beta) * 3))
        rewards = trainer._stashed_rewards.view(-1, 3)
        assert torch.equal(anchor_weights.argmax(1), rewards[:, 1:].argmax(1))  # the best anchor sample, ties → first
        # Batch leave-one-out baseline: the policy weights β·(R − b)·3 sum to 0 over the batch (γ = 0).
        torch.testing.assert_close(weights[:, 0].sum(), torch.tensor(0.0), atol=1e-5, rtol=0)

        grads = []
        for use_rloo_loss in (True, False):
            trainer.model.zero_grad()
            if use_rloo_loss:
                loss = trainer._compute_loss(trainer.model, out)
            else:
                ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
                mask = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
                per_token, _, _ = trainer._get_per_token_logps_and_entropies(
                    trainer.model, ids, mask, out["completion_ids"].size(1)
                )
                logps = (per_token * out["completion_mask"]).sum(1)
                torch.testing.assert_close(logps.detach(), out["old_logps"], rtol=1e-5, atol=1e-5)  # ratio 1
                loss = -(out["advantages"] * logps).mean()
            loss.backward()
            grads.append([p.grad.clone() for p in trainer.model.parameters()])
        for rloo_grad, manual_grad in zip(*grads, strict=True):
            torch.testing.assert_close(rloo_grad, manual_grad, rtol=1e-4, atol=1e-7)

    def test_loss_forward_skips_the_rows_of_weight_0(self, tmp_path, tiny_kit, prompt_dataset, monkeypatch):
        """The loss forward scores only the rows with a weight (policy + best anchor: 8 of 12), at RLOO's loss value
        and the gradient of −mean(w·log π) over all 12; processes that must agree on a count top up with weight-0
        rows, in batch order."""
        from types import SimpleNamespace

        trainer = _trainer(tiny_kit, prompt_dataset, _config(tmp_path, per_device_train_batch_size=12))
        trainer.model.train()
        inputs = [{"prompt": prompt} for prompt in prompt_dataset["prompt"][:4] for _ in range(3)]  # 4 groups of 3
        out = trainer._generate_and_score_completions(inputs)
        with_weight = (out["advantages"] != 0).nonzero().squeeze(1)
        assert with_weight.numel() == 8
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
        mask = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
        per_token, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, mask, out["completion_ids"].size(1)
        )
        all_rows_loss = -(out["advantages"] * (per_token * out["completion_mask"]).sum(1)).mean()
        params = [p for p in trainer.model.parameters() if p.requires_grad]
        expected = torch.autograd.grad(all_rows_loss, params)

        scored = []
        forward = trainer._get_per_token_logps_and_entropies

        def recording(model, input_ids, *args, **kwargs):
            scored.append(input_ids)
            return forward(model, input_ids, *args, **kwargs)

        monkeypatch.setattr(trainer, "_get_per_token_logps_and_entropies", recording)
        loss = trainer._compute_loss(trainer.model, out)
        assert len(scored) == 1 and torch.equal(scored[0], ids[with_weight])
        torch.testing.assert_close(loss, -out["advantages"].mean(), rtol=1e-5, atol=1e-6)  # ratio 1: −mean(w)
        for gradient, reference in zip(torch.autograd.grad(loss, params), expected, strict=True):
            torch.testing.assert_close(gradient, reference, rtol=1e-4, atol=1e-7)

        # Another process kept 10 rows: this one forwards its 8 and the first 2 weight-0 rows, in batch order.
        other_process_count = SimpleNamespace(num_processes=2, gather=lambda count: torch.tensor([count.item(), 10]))
        monkeypatch.setattr(trainer, "accelerator", other_process_count)
        kept, fraction = trainer._rows_with_weight(out)
        weight_0 = (out["advantages"] == 0).nonzero().squeeze(1)
        rows = torch.cat([with_weight, weight_0[:2]]).sort().values
        assert fraction == 10 / 12
        assert torch.equal(kept["completion_ids"], out["completion_ids"][rows])
        assert torch.equal(kept["advantages"], out["advantages"][rows])
        assert torch.equal(kept["old_logps"], out["old_logps"][rows])

    def test_gamma_lowers_kl_to_anchor(self, tmp_path, one_token_task):
        """γ > 0 must *lower* KL(π‖π_a) (BOND eq. 19, docs/maths.md §3), measured exactly on the one-token task."""
        from trl_bon import JBondTrainer
        from trl_bon.core import kl_divergence

        kls = {}
        for gamma in (0.0, 1.0):
            args = _config(
                tmp_path / str(gamma),
                max_completion_length=1,
                per_device_train_batch_size=48,
                max_steps=30,
                learning_rate=0.01,
                anchor_ema_rate=0.1,
                anchor_kl_coef=gamma,
            )
            dataset = one_token_task.dataset(480)
            trainer = JBondTrainer(one_token_task.model_path, one_token_task.reward_func, args, dataset)
            trainer.train()
            policy = one_token_task.policy_probs(trainer.model)
            anchor = one_token_task.policy_probs(trainer._anchor_model)
            kls[gamma] = kl_divergence(policy, anchor).item()
        assert kls[1.0] < 0.7 * kls[0.0], kls

    @pytest.mark.parametrize("bits", [8, 4])
    def test_quantized_base_with_lora(self, tmp_path, tiny_kit, prompt_dataset, bits):
        pytest.importorskip("bitsandbytes")
        from transformers import BitsAndBytesConfig

        if bits == 8:
            quantization, overrides = BitsAndBytesConfig(load_in_8bit=True), {}
        else:
            quantization = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
            )
            overrides = {"bf16": True}  # nf4 matmuls compute in bf16 on CPU
        args = _config(
            tmp_path, max_steps=2, anchor_ema_rate=ETA, model_init_kwargs={"device_map": "cpu"}, **overrides
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="MatMul8bitLt")
            trainer = _trainer(tiny_kit, prompt_dataset, args, quantization_config=quantization, peft_config=_lora())
            model = trainer.model
            policy_before, anchor_before = _lora_tensors(model, "default"), _lora_tensors(model, "anchor")
            trainer.train()
        policy_after, anchor_after = _lora_tensors(model, "default"), _lora_tensors(model, "anchor")
        assert any(not torch.equal(policy_after[n], policy_before[n]) for n in policy_after)
        assert any(not torch.equal(anchor_after[n], anchor_before[n]) for n in anchor_after)
        assert all(torch.isfinite(t).all() for t in anchor_after.values())
        assert trainer.state.global_step == 2

    @pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
    def test_resume_restores_policy_and_anchor(self, tmp_path, tiny_kit, prompt_dataset, lora):
        """8 straight steps == 4 steps + checkpoint + resume + 4 steps, tensor-equal (policy and anchor)."""
        from transformers import TrainerCallback

        class StopAt(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == 4:
                    control.should_training_stop = True

        def run(output_dir, resume=False, stop=False):
            args = _config(
                output_dir, max_steps=8, learning_rate=0.01, save_strategy="steps", save_steps=4, anchor_ema_rate=ETA
            )
            trainer = _trainer(
                tiny_kit,
                prompt_dataset,
                args,
                peft_config=_lora() if lora else None,
                callbacks=[StopAt()] if stop else None,
            )
            trainer.train(resume_from_checkpoint=True if resume else None)
            return trainer

        def state(trainer):
            if lora:
                return _lora_tensors(trainer.model, "default"), _lora_tensors(trainer.model, "anchor")
            anchor = {n: p.detach().clone() for n, p in trainer._anchor_model.named_parameters()}
            return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}, anchor

        straight = state(run(tmp_path / "straight"))
        interrupted = run(tmp_path / "resumed", stop=True)
        assert interrupted.state.global_step == 4
        resumed = run(tmp_path / "resumed", resume=True)
        assert resumed.state.global_step == 8
        for expected, actual in zip(straight, state(resumed), strict=True):
            assert expected.keys() == actual.keys()
            for name in expected:
                torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("use_dora", [False, True], ids=["lora", "dora"])
def test_lora_rows_come_from_their_own_adapter_and_kl_metrics_are_exact(one_token_task, tmp_path, use_dora):
    """Policy rows are drawn from the policy adapter and anchor rows from the anchor adapter, in one mixed-adapter
    `generate` call (two calls with DoRA, which PEFT refuses in mixed batches); the KL metrics (reusing RLOO's
    per-token policy log-probs) estimate the exact KLs."""
    from peft import LoraConfig

    from trl_bon import JBondTrainer
    from trl_bon.core import kl_divergence

    groups = 400
    args = _config(tmp_path, max_completion_length=1, per_device_train_batch_size=3 * groups)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"], lora_dropout=0.0, use_dora=use_dora
    )
    trainer = JBondTrainer(
        model=one_token_task.model_path,
        reward_funcs=one_token_task.reward_func,
        args=args,
        train_dataset=one_token_task.dataset(3 * groups),
        peft_config=lora,
    )
    torch.manual_seed(0)
    with torch.no_grad():  # move the policy adapter away from the anchor (= π_ref: fresh LoRA has B = 0)
        for name, param in trainer.model.named_parameters():
            if ".default." in name and "lora_B" in name:
                param.normal_(0, 3.0)
            elif ".default." in name and "lora_magnitude_vector" in name:  # DoRA rescales the direction BA moved
                param.mul_(torch.empty_like(param).uniform_(0.2, 3.0))
    policy_probs = one_token_task.policy_probs(trainer.model)
    with trainer.anchor.active():
        anchor_probs = one_token_task.policy_probs(trainer.model)
    torch.testing.assert_close(anchor_probs, one_token_task.ref_probs, atol=1e-6, rtol=0)
    assert 0.5 * (policy_probs - anchor_probs).abs().sum() > 0.2  # the test has power

    trainer.model.train()
    out = trainer._generate_and_score_completions([{"prompt": one_token_task.prompt}] * (3 * groups))
    tokens = out["completion_ids"][:, 0].view(groups, 3)
    policy_freq = torch.bincount(tokens[:, 0], minlength=6).double() / groups
    anchor_freq = torch.bincount(tokens[:, 1:].reshape(-1), minlength=6).double() / (2 * groups)
    assert 0.5 * (policy_freq - policy_probs).abs().sum() < 0.08
    assert 0.5 * (anchor_freq - anchor_probs).abs().sum() < 0.06
    assert trainer.model.training  # generation ran in eval mode and restored the mode

    metrics = trainer._metrics["train"]
    exact_kl = kl_divergence(policy_probs, one_token_task.ref_probs).item()
    assert metrics["kl_k1"][-1] == pytest.approx(exact_kl, abs=0.15)
    assert metrics["kl_k3"][-1] == pytest.approx(exact_kl, abs=0.15)
    assert metrics["jbond/kl_anchor"][-1] == pytest.approx(metrics["kl_k1"][-1], abs=1e-5)  # anchor = ref


def test_strided_routing_samples_what_peft_routing_samples(tmp_path, tiny_kit, prompt_dataset, monkeypatch):
    """J-BOND's one `generate` call routes each slot's rows through its adapter by strided views
    (`LoraAnchor.rows_routed`); under one seed it samples the completions PEFT's `adapter_names` routing samples."""
    trainer = _trainer(
        tiny_kit, prompt_dataset, _config(tmp_path, per_device_train_batch_size=12), peft_config=_lora()
    )
    torch.manual_seed(0)
    with torch.no_grad():  # a policy adapter away from the anchor (= π_ref: a fresh LoRA has B = 0)
        for name, param in trainer.model.named_parameters():
            if ".default." in name and "lora_B" in name:
                param.normal_(0, 1.0)
    prompt_ids = [[5 + row, 9, 13 + row][: 1 + row % 3] for row in range(12)]  # left-padded, lengths 1–3
    routed = []
    rows_routed = trainer.anchor.rows_routed
    monkeypatch.setattr(trainer.anchor, "rows_routed", lambda routes: routed.append(routes) or rows_routed(routes))
    samples = {}
    for by_views in (True, False):
        monkeypatch.setattr(trainer.anchor, "routes_rows_by_views", lambda by_views=by_views: by_views)
        torch.manual_seed(1)
        samples[by_views] = trainer._generate_single_turn(prompt_ids, None, {})
    assert routed == [[("default", slice(0, None, 3)), ("anchor", slice(1, None, 3)), ("anchor", slice(2, None, 3))]]
    assert samples[True] == samples[False]
    assert len({tuple(ids) for ids in samples[True]}) > 6  # they vary across rows


class TestWeightOptions:
    """`loss_normalization="token_mean"` and BOND's quantile reward (with and without the tie correction)."""

    @staticmethod
    def _score(tmp_path, tiny_kit, prompt_dataset, groups, **overrides):
        num_generations = 1 + overrides.get("num_quantile_samples", 2)
        args = _config(
            tmp_path / str(sorted(overrides.items())),
            per_device_train_batch_size=num_generations * groups,
            **overrides,
        )
        trainer = _trainer(tiny_kit, prompt_dataset, args)
        trainer.model.train()
        torch.manual_seed(0)
        inputs = [{"prompt": p} for p in prompt_dataset["prompt"][:groups] for _ in range(num_generations)]
        return trainer, trainer._generate_and_score_completions(inputs)

    def test_token_mean_divides_each_weight_by_its_length(self, tmp_path, tiny_kit, prompt_dataset):
        _, summed = self._score(tmp_path, tiny_kit, prompt_dataset, 4, loss_normalization="sequence_sum")
        _, averaged = self._score(tmp_path, tiny_kit, prompt_dataset, 4, loss_normalization="token_mean")
        assert torch.equal(summed["completion_ids"], averaged["completion_ids"])  # same seed, same samples
        lengths = summed["completion_mask"].sum(1).float()
        torch.testing.assert_close(averaged["advantages"], summed["advantages"] / lengths)

    @pytest.mark.parametrize("tie_correction", [False, True])
    def test_bond_policy_weight_is_the_quantile_return(self, tmp_path, tiny_kit, prompt_dataset, tie_correction):
        from trl_bon.core import batch_loo_baseline, empirical_quantile
        from trl_bon.core import tie_correction as tie_b

        n, k, groups = 2, 4, 4
        trainer, out = self._score(
            tmp_path,
            tiny_kit,
            prompt_dataset,
            groups,
            mode="bond",
            num_candidates=n,
            num_quantile_samples=k,
            include_tie_correction=tie_correction,
        )
        rewards = trainer._stashed_rewards.view(groups, k + 1)
        policy, anchor = rewards[:, 0], rewards[:, 1:]
        # Fixed anchor = π_ref = the untrained policy, so Δ = log π − log π_a = 0 on the first batch.
        returns = (n - 1) * empirical_quantile(policy, anchor, smoothing="clamp").log()
        if tie_correction:
            p_lt = (anchor < policy[:, None]).double().mean(1)
            p_le = (anchor <= policy[:, None]).double().mean(1)
            returns = returns + tie_b(p_lt, p_le, n).log().float()
        expected = trainer.args.jeffreys_beta * (returns - batch_loo_baseline(returns)) * (k + 1)
        torch.testing.assert_close(out["advantages"].view(groups, k + 1)[:, 0], expected, atol=1e-4, rtol=1e-4)
        # The SFT target is the best of the first N anchor samples.
        target = out["advantages"].view(groups, k + 1)[:, 1 : n + 1].argmax(1)
        assert torch.equal(target, anchor[:, :n].argmax(1))


def test_vllm_routing_with_a_mocked_engine(tiny_kit, prompt_dataset, tmp_path, monkeypatch):
    """vLLM cannot run here (no GPU), so its engine is mocked: policy rows go to one `generate` call with groups of 1,
    anchor rows to a second call with groups of 2, weights are synced with the anchor adapter active before the anchor
    call and again (policy active) at the next generation, and the completions come back in slot order."""
    trainer = _trainer(tiny_kit, prompt_dataset, _config(tmp_path, per_device_train_batch_size=6), peft_config=_lora())
    model = trainer.model
    calls = []

    class FakeVLLM:
        def sync_weights(self):
            calls.append(("sync", model.active_adapter))

        def generate(self, prompts, images, num_generations, profiler):
            calls.append(("generate", model.active_adapter, num_generations, [ids[0] for ids in prompts]))
            # completion = the prompt's first token id + (100 for the anchor adapter), to check the merge order
            offset = 100 if model.active_adapter == "anchor" else 0
            return prompts, [[ids[0] + offset] for ids in prompts], None, None

    monkeypatch.setattr(trainer, "use_vllm", True)
    monkeypatch.setattr(trainer, "vllm_generation", FakeVLLM(), raising=False)
    monkeypatch.setattr(trainer, "_last_loaded_step", 0, raising=False)
    prompt_ids = [[1], [1], [1], [2], [2], [2]]  # 2 prompt groups of 3 rows: slots 0, 1, 2
    completions = trainer._generate_single_turn(prompt_ids, None, {})
    assert completions == [[1], [101], [101], [2], [102], [102]]
    assert calls == [
        ("generate", "default", 1, [1, 2]),  # same step: no sync before the policy call
        ("sync", "anchor"),  # forced sync of the anchor adapter's weights
        ("generate", "anchor", 2, [1, 1, 2, 2]),
    ]
    assert model.active_adapter == "default" and trainer._last_loaded_step == -1  # the policy re-syncs next time
    assert trainer.num_generations == 3  # the group size presented to vLLM is restored
    calls.clear()
    trainer._generate_single_turn(prompt_ids, None, {})
    assert calls[0] == ("sync", "default")


def test_logged_reward_is_the_policy_samples_reward(tmp_path, tiny_kit, prompt_dataset):
    """Metric vocabulary (docs/metrics.md): `reward` and `rewards/<func>/mean` are the raw reward of the samples the
    policy drew (slot 0), not of the anchor rows; the completions table marks the rows; KL to π_ref under `kl_k1` and
    `kl_k3` (the names `trl-bon eval` writes); the Jeffreys estimate beside the constant `loss`."""
    trainer = _trainer(tiny_kit, prompt_dataset, _config(tmp_path, per_device_train_batch_size=12, log_ref_kl=True))
    trainer.model.train()
    inputs = [{"prompt": prompt} for prompt in prompt_dataset["prompt"][:4] for _ in range(3)]
    trainer._generate_and_score_completions(inputs)
    metrics = trainer._metrics["train"]
    rewards = trainer._stashed_rewards.view(4, 3)
    assert not torch.equal(rewards[:, 0].mean(), rewards.mean())  # the test has power: the anchor rows differ
    assert metrics["reward"][-1] == pytest.approx(rewards[:, 0].mean().item(), abs=1e-6)
    assert metrics["rewards/token_sum_reward/mean"][-1] == pytest.approx(rewards[:, 0].mean().item(), abs=1e-6)
    assert metrics["reward_std"][-1] == pytest.approx(rewards[:, 0].std().item(), abs=1e-5)
    assert metrics["jbond/reward/anchor"][-1] == pytest.approx(rewards[:, 1:].mean().item(), abs=1e-6)
    assert list(trainer._logs["extra"]["sample"])[-12:] == ["policy", "anchor", "anchor"] * 4
    assert metrics["kl_k1"][-1] == pytest.approx(0.0, abs=1e-5)  # π = π_ref before the first step
    assert metrics["kl_k3"][-1] == pytest.approx(0.0, abs=1e-5)
    beta = trainer.args.jeffreys_beta
    expected = (1 - beta) * metrics["jbond/target_nll"][-1] - beta * metrics["jbond/return"][-1]
    assert metrics["objective/jeffreys"][-1] == pytest.approx(expected, abs=1e-5)
    assert metrics["jbond/target_nll"][-1] > 0  # the test has power: the forward term is not 0
    # Full fine-tuning: KL to the frozen π_ref copy, not to the policy itself, once the policy has moved.
    with torch.no_grad():
        for parameter in trainer.model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    trainer._generate_and_score_completions(inputs)
    assert metrics["kl_k3"][-1] > 1e-3

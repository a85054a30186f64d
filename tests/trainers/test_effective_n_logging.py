"""The effective-N meters in the training logs (docs/metrics.md) and `EffectiveNStopCallback` on real runs of the
one-token task."""

import pytest
import torch
from transformers import TrainerControl, TrainerState

from tests.helpers import cpu_args
from trl_bon.core import effective_n_from_kl, effective_n_from_win_rate


GROUPS = 32


def _lora():
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)


def _jbond(task, tmp_path, peft_config=None, callbacks=None, **overrides):
    from trl_bon import JBondConfig, JBondTrainer

    kwargs = cpu_args(
        output_dir=str(tmp_path),
        max_completion_length=1,
        per_device_train_batch_size=3 * GROUPS,
        max_steps=2,
        learning_rate=0.1,
        gradient_checkpointing=False,
    )
    kwargs.update(overrides)
    return JBondTrainer(
        model=task.model_path,
        reward_funcs=task.reward_func,
        args=JBondConfig(**kwargs),
        train_dataset=task.dataset(3 * GROUPS),
        peft_config=peft_config,
        callbacks=callbacks,
    )


def _step_logs(trainer):
    return [h for h in trainer.state.log_history if "loss" in h]


def _n_kl(kl):
    return effective_n_from_kl(torch.tensor(kl, dtype=torch.float64)).item()


def _n_win(win_rate):
    return effective_n_from_win_rate(torch.tensor(win_rate, dtype=torch.float64)).item()


def test_bond_with_a_fixed_anchor_logs_both_meters(one_token_task, tmp_path):
    """A fixed anchor is π_ref: the win rate against the anchor samples gives `effective_n_win`."""
    trainer = _jbond(one_token_task, tmp_path, peft_config=_lora(), anchor="fixed")
    trainer.train()
    logs = _step_logs(trainer)
    assert len(logs) == 2
    for h in logs:
        assert h["effective_n_kl"] == pytest.approx(_n_kl(h["kl_k1"]), rel=1e-12)
        assert h["effective_n_win"] == pytest.approx(_n_win(h["jbond/win_rate_vs_anchor"]), rel=1e-12)
        assert h["effective_n_kl"] >= 1.0
    assert logs[0]["effective_n_kl"] == pytest.approx(1.0, abs=1e-3)  # π = π_ref before the first update


def test_jbond_logs_n_kl_only_with_a_moving_anchor_and_neither_without_a_kl(one_token_task, tmp_path):
    lora = _jbond(one_token_task, tmp_path / "lora", peft_config=_lora())  # EMA anchor: not π_ref
    lora.train()
    for h in _step_logs(lora):
        assert h["effective_n_kl"] == pytest.approx(_n_kl(h["kl_k1"]), rel=1e-12)
        assert "effective_n_win" not in h
    full = _jbond(one_token_task, tmp_path / "full", max_steps=1)  # full fine-tuning: no KL unless log_ref_kl=True
    full.train()
    (h,) = _step_logs(full)
    assert "kl_k1" not in h and "effective_n_kl" not in h and "effective_n_win" not in h


def test_vbon_logs_both_meters_against_its_cached_reference_rewards(one_token_task, tmp_path):
    from trl_bon import VBoNConfig, VBoNTrainer
    from trl_bon.ref_cache import build_reference_reward_cache
    from trl_bon.sampling import GenerationSettings, Sampler

    args = VBoNConfig(
        str(tmp_path / "out"),
        **cpu_args(
            num_candidates=4,
            max_completion_length=1,
            num_generations=8,
            per_device_train_batch_size=64,
            max_steps=2,
            learning_rate=0.1,
            num_reference_samples=16,
        ),
    )
    dataset = one_token_task.dataset(64)
    sampler = Sampler(one_token_task.model_path, GenerationSettings.from_trainer_args(args), seed=0, progress=False)
    build_reference_reward_cache(
        sampler, dataset, one_token_task.reward_func, 16, f"{args.output_dir}/_reference_rewards"
    )
    trainer = VBoNTrainer(one_token_task.model_path, one_token_task.reward_func, args=args, train_dataset=dataset)
    trainer.train()
    logs = _step_logs(trainer)
    assert len(logs) == 2
    for h in logs:
        assert 0.0 < h["win_rate_vs_ref"] < 1.0
        assert h["effective_n_win"] == pytest.approx(_n_win(h["win_rate_vs_ref"]), rel=1e-12)
        assert h["effective_n_kl"] == pytest.approx(_n_kl(h["kl_k1"]), rel=1e-12)
    assert logs[0]["effective_n_kl"] == 1.0  # π = π_ref at the first step: the k1 terms are exactly 0


class TestEffectiveNStopCallback:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({}, "needs a limit"),
            ({"target_n": 0.5}, "`target_n` must be a finite number >= 1"),
            ({"target_n": float("inf")}, "`target_n` must be a finite number >= 1"),
            ({"target_n": True}, "`target_n` must be a finite number >= 1"),
            ({"kl_budget": 0.0}, "`kl_budget` must be a finite number of nats > 0"),
            ({"kl_budget": "1"}, "`kl_budget` must be a finite number of nats > 0"),
            ({"target_n": 4, "meter": "reward"}, "`meter` must be one of"),
        ],
    )
    def test_bad_arguments_raise_at_construction(self, kwargs, message):
        from trl_bon import EffectiveNStopCallback

        with pytest.raises(ValueError, match=message):
            EffectiveNStopCallback(**kwargs)

    def test_stops_on_the_first_log_at_or_past_a_limit(self):
        from trl_bon import EffectiveNStopCallback

        callback = EffectiveNStopCallback(target_n=4, kl_budget=2.0)
        control = TrainerControl()
        step = {"loss": 0.0, "effective_n_kl": 3.9, "kl_k1": 0.6}
        callback.on_log(None, TrainerState(), control, logs=step)
        callback.on_log(None, TrainerState(), control, logs={"eval_effective_n_kl": 9.0})  # evaluation: ignored
        assert not control.should_training_stop
        callback.on_log(None, TrainerState(), control, logs={**step, "effective_n_kl": 4.0})
        assert control.should_training_stop and callback.stopped_by == ("effective_n_kl", 4.0)
        win = EffectiveNStopCallback(target_n=2, meter="win")
        win.on_log(None, TrainerState(), control := TrainerControl(), logs={**step, "effective_n_win": 2.5})
        assert control.should_training_stop and win.stopped_by == ("effective_n_win", 2.5)

    def test_a_limit_on_an_unlogged_metric_raises_at_the_first_training_log(self):
        from trl_bon import EffectiveNStopCallback

        callback = EffectiveNStopCallback(target_n=2, meter="win")
        with pytest.raises(ValueError, match="reads `effective_n_win`, which this trainer does not log"):
            callback.on_log(None, TrainerState(), TrainerControl(), logs={"loss": 0.1, "effective_n_kl": 1.2})

    def test_stops_a_real_run_when_the_kl_budget_is_reached(self, one_token_task, tmp_path):
        from trl_bon import EffectiveNStopCallback

        callback = EffectiveNStopCallback(kl_budget=0.05)
        trainer = _jbond(
            one_token_task, tmp_path, peft_config=_lora(), callbacks=[callback], max_steps=40, learning_rate=0.3
        )
        trainer.train()
        assert callback.stopped_by is not None
        assert 1 < trainer.state.global_step < 40
        last = _step_logs(trainer)[-1]
        assert last["kl_k1"] >= 0.05 and all(h["kl_k1"] < 0.05 for h in _step_logs(trainer)[:-1])

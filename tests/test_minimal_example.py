"""`examples/minimal_jbond.py` is the executable spec of `JBondTrainer`: on the same samples the trainer's weights
(its `advantages`) equal the example's, and the example trains end to end in seconds."""

import importlib.util
from pathlib import Path

import pytest
import torch

from tests.helpers import cpu_args


pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "minimal_jbond.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("minimal_jbond", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "options",
    [{}, {"anchor_kl_coef": 0.3, "jeffreys_beta": 0.7, "loss_normalization": "token_mean", "jbond_penalty": 1.5}],
    ids=["paper", "options"],
)
def test_trainer_weights_equal_the_example_weights(example, one_token_task, tmp_path, options):
    from trl_bon import JBondConfig, JBondTrainer

    groups = 8
    args = JBondConfig(
        **cpu_args(
            output_dir=str(tmp_path),
            max_completion_length=1,
            per_device_train_batch_size=3 * groups,
            max_steps=1,
            learning_rate=0.1,
            anchor_ema_rate=0.5,  # after one step the policy, the anchor and π_ref all differ
        ),
        **options,
    )
    trainer = JBondTrainer(
        model=one_token_task.model_path,
        reward_funcs=one_token_task.reward_func,
        args=args,
        train_dataset=one_token_task.dataset(3 * groups),
    )
    trainer.train()
    torch.manual_seed(1)
    out = trainer._generate_and_score_completions([{"prompt": one_token_task.prompt}] * (3 * groups))

    rewards = torch.tensor(one_token_task.reward_func(completion_ids=out["completion_ids"].tolist()))
    spec = example.batch_weights(
        trainer.model,
        trainer._anchor_model,
        out["prompt_ids"],
        out["prompt_mask"],
        out["completion_ids"],
        out["completion_mask"],
        rewards,
        **options,
    )
    assert spec.stats["kl_anchor"].abs().item() > 1e-3  # the anchor differs from the policy: Δ matters
    assert spec.weights.abs().sum() > 0
    torch.testing.assert_close(out["advantages"], spec.weights.view(-1), atol=1e-5, rtol=1e-5)
    assert trainer._metrics["train"]["jbond/kl_anchor"][-1] == pytest.approx(spec.stats["kl_anchor"].item(), abs=1e-5)


def test_example_trains_towards_best_of_n(example):
    history = example.main(["--steps", "20", "--prompts-per-step", "8"])
    first, last = history[0], history[-1]
    assert len(history) == 21
    assert last["reward"] > first["reward"] + 0.3
    assert last["kl_to_bon2"] < 0.5 * first["kl_to_bon2"]

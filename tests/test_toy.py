"""The offline toy kit (`trl_bon.toy`): exact one-token reference and loadable tiny models."""

import pytest
import torch


def test_one_token_model_softmax_equals_ref_probs(one_token_task):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(one_token_task.model_path, local_files_only=True)
    probs = one_token_task.policy_probs(model)
    assert probs.shape == one_token_task.ref_probs.shape == (6,)
    torch.testing.assert_close(probs, one_token_task.ref_probs, atol=1e-6, rtol=0)
    torch.testing.assert_close(one_token_task.ref_probs.sum(), torch.tensor(1.0, dtype=torch.float64))
    # The tokenizer maps the prompt to token 0, which is what `policy_probs` feeds the model.
    tokenizer = AutoTokenizer.from_pretrained(one_token_task.model_path, local_files_only=True)
    assert tokenizer(one_token_task.prompt, add_special_tokens=False)["input_ids"] == [0]
    assert len(tokenizer) == 6
    # Sampling one token through `generate` follows π_ref (the prompt is all the model sees).
    with torch.no_grad():
        logits = model(**tokenizer([one_token_task.prompt], return_tensors="pt", add_special_tokens=False)).logits
    torch.testing.assert_close(torch.softmax(logits[0, -1].double(), -1), one_token_task.ref_probs, atol=1e-6, rtol=0)


def test_one_token_task_reward_func(one_token_task):
    rewards = one_token_task.reward_func(completion_ids=[[1], [2], [0]], prompts=["t0"] * 3)
    assert rewards == [5.0, 0.0, 2.0]
    assert len(one_token_task.dataset(5)) == 5 and one_token_task.dataset(5)[0]["prompt"] == "t0"


def test_policy_probs_restores_training_mode(one_token_task):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(one_token_task.model_path, local_files_only=True)
    model.train()
    one_token_task.policy_probs(model)
    assert model.training


def test_tiny_kit_loads_offline(tiny_kit):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    policy = AutoModelForCausalLM.from_pretrained(tiny_kit["policy"], local_files_only=True)
    reward = AutoModelForSequenceClassification.from_pretrained(tiny_kit["reward"], local_files_only=True)
    for path in (tiny_kit["policy"], tiny_kit["reward"]):
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        assert tokenizer.pad_token == "<pad>" and tokenizer.eos_token == "<eos>" and tokenizer.padding_side == "left"
        assert tokenizer.chat_template is not None
    batch = tokenizer(["the cat sat", "tell me a story"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = policy(**batch).logits
        scores = reward(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], len(tokenizer))
    assert scores.shape == (2, 1)
    assert torch.isfinite(logits).all() and torch.isfinite(scores).all()
    assert policy.config.num_hidden_layers == 2 and reward.config.num_labels == 1
    assert reward.config.pad_token_id == tokenizer.pad_token_id


def test_tiny_kit_is_deterministic(tmp_path, tiny_kit):
    from transformers import AutoModelForCausalLM

    from trl_bon.toy import build_tiny_kit

    again = build_tiny_kit(tmp_path)
    first = AutoModelForCausalLM.from_pretrained(tiny_kit["policy"], local_files_only=True)
    second = AutoModelForCausalLM.from_pretrained(again["policy"], local_files_only=True)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("ref_probs", [(0.7, 0.2, 0.1), (0.05, 0.05, 0.4, 0.5)])
def test_one_token_task_custom_distribution(tmp_path, ref_probs):
    from transformers import AutoModelForCausalLM

    from trl_bon.toy import build_one_token_task

    task = build_one_token_task(tmp_path, ref_probs=ref_probs, rewards=tuple(range(len(ref_probs))))
    model = AutoModelForCausalLM.from_pretrained(task.model_path, local_files_only=True)
    torch.testing.assert_close(
        task.policy_probs(model), torch.tensor(ref_probs, dtype=torch.float64), atol=1e-6, rtol=0
    )


def test_demo_refuses_zero_steps():
    from trl_bon.scripts.demo import main

    with pytest.raises(SystemExit, match="--steps must be >= 1, got 0"):
        main(["--steps", "0", "--no-plot"])
    with pytest.raises(SystemExit, match="--prompts-per-step must be >= 1, got 0"):  # not the default 16
        main(["--prompts-per-step", "0", "--no-plot"])


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_tiny_kit_architectures_with_dropout(tmp_path, architecture):
    from transformers import AutoConfig

    from trl_bon.toy import build_tiny_kit

    paths = build_tiny_kit(tmp_path, architecture=architecture, dropout=0.1)
    config = AutoConfig.from_pretrained(paths["policy"])
    assert config.model_type == architecture
    dropouts = (
        [config.resid_pdrop, config.embd_pdrop, config.attn_pdrop]
        if architecture == "gpt2"
        else [config.attention_dropout]
    )
    assert dropouts == [0.1] * len(dropouts)
    assert AutoConfig.from_pretrained(paths["reward"]).num_labels == 1

"""Exactness of the offline layer on realistic shapes: a GPT-2-architecture model (learned absolute positions,
dropout 0.1 in its config, left in train mode as a user's model may be) and a Llama one, prompts of different lengths
in one left-padded batch, two-token completions.

- `completion_logps` (the evaluation's log-probs) equals scoring each sequence alone, unpadded, to 1e-5;
- `Sampler.sample` (behind `best_of_n`, the reference-reward cache and the evaluation) draws each prompt's
  completions from the model's exact law, computed by enumerating every completion;
- reward models score a right-padded batch as they score each text alone (dropout off);
- each check is shown to fail on the defect it guards against (positions not derived from the mask).
"""

import pytest
import torch

from trl_bon.core import kl_divergence
from trl_bon.rewards import RewardScorer
from trl_bon.sampling import GenerationSettings, Sampler, completion_logps
from trl_bon.toy import tiny_causal_lm, word_level_tokenizer


V = 6  # tokens t0…t5; t5 is EOS and pad
PROMPTS = ["t0", "t1 t2 t3", "t2 t4 t1 t0 t3 t1"]  # 1, 3 and 6 tokens: short rows are left-padded by 5
EOS = V - 1


@pytest.fixture(scope="module")
def tokenizer():
    return word_level_tokenizer(V)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request, tokenizer):
    # A large init makes the law peaked and position-dependent, so a shifted position would show.
    model = tiny_causal_lm(tokenizer, request.param, dropout=0.1, seed=1, initializer_range=0.6)
    return model.train()  # dropout active unless the offline layer turns it off


def _unpadded_logits(model, ids: list[int]) -> torch.Tensor:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    model.train(was_training)
    return logits


def exact_two_token_law(model, prompt_ids: list[int]) -> dict[tuple, float]:
    """P(y | x) of every completion of at most two tokens (a completion stops after EOS), unpadded, no dropout."""
    first = torch.softmax(_unpadded_logits(model, prompt_ids)[-1], -1)
    law = {(EOS,): float(first[EOS])}
    for y1 in range(V - 1):
        second = torch.softmax(_unpadded_logits(model, prompt_ids + [y1])[-1], -1)
        for y2 in range(V):
            law[(y1, y2)] = float(first[y1] * second[y2])
    return law


def test_completion_logps_equal_unpadded_scoring(model, tokenizer):
    prompt_ids = [tokenizer(p)["input_ids"] for p in PROMPTS] * 2
    completion_ids = [[3, 1], [EOS], [0, 2], [4, 4], [2, EOS], [1, 0]]
    logps, mask = completion_logps(model, prompt_ids, completion_ids, temperature=0.7, pad_token_id=EOS)
    assert model.training  # restored
    assert mask.sum(1).tolist() == [len(c) for c in completion_ids]
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids, strict=True)):
        logits = _unpadded_logits(model, p + c)[len(p) - 1 : -1] / 0.7
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(c).unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(logps[i, : len(c)].double(), expected, atol=1e-5, rtol=0)


def test_scoring_without_mask_positions_would_differ(tokenizer):
    # The guard: on GPT-2, a left-padded row scored at positions 0…L-1 (no position ids) is a different distribution.
    model = tiny_causal_lm(tokenizer, "gpt2", seed=1, initializer_range=0.6)
    short = tokenizer(PROMPTS[0])["input_ids"]
    padded = torch.tensor([[EOS] * 5 + short])
    mask = torch.tensor([[0] * 5 + [1]])
    with torch.no_grad():
        shifted = model(input_ids=padded, attention_mask=mask).logits[0, -1]
    unpadded = _unpadded_logits(model, short)[-1]
    assert (torch.log_softmax(shifted.double(), -1) - torch.log_softmax(unpadded, -1)).abs().max() > 0.05


def test_sampler_draws_from_the_exact_law(model, tokenizer):
    draws = 3000  # per prompt; E[KL(empirical‖exact)] ≈ 30 / (2·3000) = 0.005
    samples = Sampler(
        model,
        GenerationSettings(max_completion_length=2),
        tokenizer=tokenizer,
        batch_size=len(PROMPTS) * draws,  # one generate call: every prompt in the same left-padded batch
        seed=0,
        progress=False,
    ).sample(PROMPTS, draws)
    assert model.training  # restored
    for i, prompt in enumerate(PROMPTS):
        law = exact_two_token_law(model, tokenizer(prompt)["input_ids"])
        outcomes = list(law)
        counts = torch.zeros(len(outcomes), dtype=torch.float64)
        for ids in samples.completion_ids[i * draws : (i + 1) * draws]:
            counts[outcomes.index(tuple(ids))] += 1
        empirical = counts / draws
        exact = torch.tensor([law[o] for o in outcomes], dtype=torch.float64)
        assert kl_divergence(empirical, exact) < 0.02, prompt


def test_reward_model_scores_a_padded_batch_like_single_texts(tokenizer):
    from transformers import AutoModelForSequenceClassification

    from trl_bon.toy import _model_config

    for architecture in ("gpt2", "llama"):
        torch.manual_seed(0)
        config = _model_config(architecture, tokenizer, 0.1, num_labels=1, initializer_range=0.6)
        reward_model = AutoModelForSequenceClassification.from_config(config).train()
        scorer = RewardScorer(reward_model, reward_processing_classes=tokenizer)
        completions = [" t3", " t1 t2 t4 t0", " t0 t0"]
        batch = scorer(PROMPTS, completions)[:, 0]
        alone = torch.cat([scorer([p], [c])[:, 0] for p, c in zip(PROMPTS, completions, strict=True)])
        torch.testing.assert_close(batch, alone, atol=1e-5, rtol=0)
        assert not reward_model.training


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_prompts_past_the_context_window_are_refused(tokenizer, architecture):
    from trl_bon.sampling import Sampler

    overrides = {"n_positions": 8} if architecture == "gpt2" else {"max_position_embeddings": 8}
    model = tiny_causal_lm(tokenizer, architecture, **overrides)
    sampler = Sampler(model, GenerationSettings(max_completion_length=3), tokenizer=tokenizer, progress=False)
    refusal = r"`prompts` has 1 prompt\(s\) \(rows \[2\], longest 6 tokens\) that leave no room for"
    with pytest.raises(ValueError, match=refusal + " `max_completion_length=3`"):
        sampler.sample(PROMPTS, 1)
    assert len(sampler.sample(PROMPTS[:2], 1).completion_ids) == 2  # 3 + 3 tokens fit in 8 positions

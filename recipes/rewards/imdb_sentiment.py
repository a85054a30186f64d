"""IMDB sentiment reward for the recipes: the raw POSITIVE logit of `lvwerra/distilbert-imdb` on prompt + completion.

`lvwerra/distilbert-imdb` is a 2-label classifier, while TRL loads a reward model given by id with `num_labels=1`
(which would not match its head), so the IMDB recipes pass this callable instead:
`--reward_funcs recipes.rewards.imdb_sentiment.positive_logit` (run from the repository root; it is importable as a
namespace package). The vBoN paper's IMDB reward is this logit (the authors' code, `rycolab/vbon`); BoN-SFT in that
code ranks by the softmax probability instead, a monotone transform for fixed text, so the Best-of-N choice is the
same up to the NEGATIVE logit.

Environment: `IMDB_REWARD_MODEL` (default `lvwerra/distilbert-imdb`), `IMDB_REWARD_BATCH_SIZE` (default 64).
"""

import os
from functools import lru_cache


@lru_cache(maxsize=1)
def _load():
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    name = os.environ.get("IMDB_REWARD_MODEL", "lvwerra/distilbert-imdb")
    tokenizer = AutoTokenizer.from_pretrained(name)
    model = AutoModelForSequenceClassification.from_pretrained(name).eval()
    if torch.cuda.is_available():
        model = model.to(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    label2id = {k.upper(): v for k, v in model.config.label2id.items()}
    return tokenizer, model, label2id.get("POSITIVE", 1)


def positive_logit(prompts, completions, **kwargs) -> list[float]:
    """TRL reward function: POSITIVE logit of each `prompt + completion` (plain-text prompts)."""
    import torch

    tokenizer, model, positive = _load()
    texts = [p + c for p, c in zip(prompts, completions, strict=True)]
    batch_size = int(os.environ.get("IMDB_REWARD_BATCH_SIZE", 64))
    scores = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            inputs = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True, truncation=True)
            logits = model(**inputs.to(model.device)).logits
            scores += logits[:, positive].float().cpu().tolist()
    return scores

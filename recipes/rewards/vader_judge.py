"""VADER compound score of prompt + completion, in [-1, 1]: the independent judge of the convergence benchmark.

VADER (`vaderSentiment==3.3.2`) is a sentiment lexicon with rules, learned from nothing the policy or the reward model
saw, so a policy that raises the trained reward without raising this score is exploiting the reward model. It is used
for evaluation only, as a reward function of `trl-bon eval`:

    trl-bon eval --config recipes/eval/convergence_gpt2_tiny.yaml --checkpoints ... \\
        --reward_funcs recipes.rewards.vader_judge.compound --reward_weights 0 1

(the reward model of the recipe gets weight 0, so the reported "reward" is the judge's score of the same samples).
`benchmarks/convergence_setup.py` unpacks vaderSentiment into `<cache>/site`; put that folder on `PYTHONPATH`, or
`pip install vaderSentiment==3.3.2`.
"""

from functools import lru_cache


@lru_cache(maxsize=1)
def _analyzer():
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as error:
        raise ImportError(
            "The VADER judge needs vaderSentiment: `pip install vaderSentiment==3.3.2`, or put the `site` folder "
            "that benchmarks/convergence_setup.py prepared on PYTHONPATH."
        ) from error
    return SentimentIntensityAnalyzer()


def compound(prompts, completions, **kwargs) -> list[float]:
    """VADER compound score of each `prompt + completion` (TRL reward-function signature)."""
    analyzer = _analyzer()
    return [analyzer.polarity_scores(p + c)["compound"] for p, c in zip(prompts, completions, strict=True)]

"""The verifier of the digit-reversal task (`benchmarks/verifiable_setup.py`): 1.0 if the completion is the prompt's
digits reversed, else 0.0.

A prompt is 3–5 space-separated digits followed by `=` ("3 1 4 ="); the correct completion is the same digits in
reverse order ("4 1 3"), nothing more. Whitespace around and between tokens does not matter; anything else (a missing,
extra, wrong or non-digit token) scores 0.0. Plain Python, TRL's reward-function signature:

    trl-bon jbond ... --reward_funcs recipes.rewards.reversal.reversal_accuracy
    trl grpo ... --reward_funcs recipes.rewards.reversal.reversal_accuracy
"""


def _text(message) -> str:
    """A prompt or completion as text: TRL passes strings, or message lists for conversational data."""
    if isinstance(message, str):
        return message
    return message[-1]["content"]


def target(prompt: str) -> list[str] | None:
    """The expected completion tokens of a prompt ("3 1 4 =" → ["4", "1", "3"]), or None for a malformed prompt."""
    tokens = prompt.split()
    if len(tokens) < 2 or tokens[-1] != "=" or not all(t.isdigit() and len(t) == 1 for t in tokens[:-1]):
        return None
    return tokens[-2::-1]


def reversal_accuracy(prompts, completions, **kwargs) -> list[float]:
    """1.0 where the completion is exactly the prompt's digits reversed (whitespace-insensitive), else 0.0."""
    if len(prompts) != len(completions):
        raise ValueError(f"got {len(prompts)} prompts for {len(completions)} completions; pass one prompt each")
    scores = []
    for prompt, completion in zip(prompts, completions):
        expected = target(_text(prompt))
        if expected is None:
            raise ValueError(f"not a reversal prompt (3-5 digits then '='): {_text(prompt)!r}")
        scores.append(float(_text(completion).split() == expected))
    return scores

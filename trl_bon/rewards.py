"""Offline reward scoring with TRL's `reward_funcs` conventions.

`RLOOTrainer._calculate_rewards` needs a live trainer, so the sampler, the vBoN reference-reward cache and the
evaluation score completions here instead. The conventions are TRL's (a parity test pins them):

- a `str` reward function is a model id or path, loaded with `AutoModelForSequenceClassification(num_labels=1)`;
- a reward model scores `prompt + completion` (chat-templated when conversational), right-padded, without added
  special tokens, and the reward is `logits[:, 0]`;
- a callable gets `prompts=`, `completions=`, `completion_ids=` and every extra dataset column as keyword arguments,
  may be `async`, and may return `None` for a sample, which becomes NaN (that function is skipped for that sample);
- the scalar reward is the weighted `nansum` over functions; a sample every function skipped is NaN.
"""

import asyncio
import inspect
from collections.abc import Callable, Sequence

import torch
from torch import nn


RewardFunc = str | nn.Module | Callable[..., list[float | None]]


def reward_func_name(func: RewardFunc) -> str:
    """The name TRL gives a reward function in its logs (model id basename or the callable's `__name__`)."""
    if isinstance(func, nn.Module):
        return func.config._name_or_path.rstrip("/").split("/")[-1]
    return getattr(func, "__name__", type(func).__name__)


class RewardScorer:
    """Scores prompt/completion pairs with a list of TRL-style reward functions, outside any trainer.

    Args:
        reward_funcs (`RewardFunc` or `list[RewardFunc]`):
            Model ids/paths, `PreTrainedModel` sequence classifiers or callables, as for [`~trl.RLOOTrainer`].
        reward_processing_classes (`PreTrainedTokenizerBase` or `list`, *optional*):
            Tokenizers of the reward models; loaded from the model's path when `None`.
        reward_weights (`list[float]`, *optional*):
            Weight of each function in the scalar reward; all ones by default.
        model_init_kwargs (`dict`, *optional*):
            Keyword arguments for loading reward models given as strings.
        batch_size (`int`, *optional*, defaults to `64`):
            Texts per reward-model forward.
        chat_template_kwargs (`dict`, *optional*):
            Extra arguments for `apply_chat_template` on conversational samples.

    Example:

    ```python
    >>> from trl_bon.rewards import RewardScorer
    >>> def length_reward(completions, **kwargs):
    ...     return [float(len(c)) for c in completions]
    >>> scorer = RewardScorer(length_reward)
    >>> scorer.weighted(scorer(["a", "b"], ["xy", "xyz"])).tolist()
    [2.0, 3.0]
    ```
    """

    def __init__(
        self,
        reward_funcs: RewardFunc | Sequence[RewardFunc],
        reward_processing_classes=None,
        reward_weights: Sequence[float] | None = None,
        model_init_kwargs: dict | None = None,
        batch_size: int = 64,
        chat_template_kwargs: dict | None = None,
        device: str | torch.device | None = None,
    ):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

        funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
        if not funcs:
            raise ValueError("`reward_funcs` is empty; pass at least one reward model path or callable.")
        if reward_processing_classes is None:
            reward_processing_classes = [None] * len(funcs)
        elif not isinstance(reward_processing_classes, (list, tuple)):
            reward_processing_classes = [reward_processing_classes]
        if len(reward_processing_classes) != len(funcs):
            raise ValueError(
                f"Got {len(reward_processing_classes)} reward processing classes for {len(funcs)} reward functions; "
                "pass one per function (None for callables)."
            )
        if reward_weights is not None and len(reward_weights) != len(funcs):
            raise ValueError(f"Got {len(reward_weights)} reward weights for {len(funcs)} reward functions.")
        self.device = torch.device(device) if device is not None else None
        self.funcs, self.tokenizers = [], []
        for func, tokenizer in zip(funcs, reward_processing_classes, strict=True):
            if isinstance(func, str):
                func = AutoModelForSequenceClassification.from_pretrained(
                    func, num_labels=1, **(model_init_kwargs or {})
                )
            if isinstance(func, PreTrainedModel):
                func.eval()
                if self.device is not None:
                    func.to(self.device)
                if tokenizer is None:
                    tokenizer = AutoTokenizer.from_pretrained(func.config._name_or_path)
                if tokenizer.pad_token_id is None:
                    tokenizer.pad_token = tokenizer.eos_token
                # The reward is read at the last non-pad token, so the model must know the tokenizer's pad id.
                func.config.get_text_config().pad_token_id = tokenizer.pad_token_id
            self.funcs.append(func)
            self.tokenizers.append(tokenizer)
        self.names = [reward_func_name(f) for f in self.funcs]
        self.weights = torch.tensor(reward_weights if reward_weights is not None else [1.0] * len(funcs))
        self.batch_size = batch_size
        self.chat_template_kwargs = chat_template_kwargs or {}

    def signature(self) -> dict:
        """What identifies this reward for caches: function names and weights."""
        return {"reward_funcs": list(self.names), "reward_weights": self.weights.tolist()}

    def _texts(self, prompts, completions, tokenizer) -> list[str]:
        from trl import apply_chat_template, is_conversational

        if is_conversational({"prompt": prompts[0]}):
            return [
                apply_chat_template({"messages": p + c}, tokenizer, **self.chat_template_kwargs)["text"]
                for p, c in zip(prompts, completions, strict=True)
            ]
        return [p + c for p, c in zip(prompts, completions, strict=True)]

    @torch.inference_mode()
    def _score_model(self, model, tokenizer, texts: list[str]) -> torch.Tensor:
        device = next(model.parameters()).device
        scores = []
        for start in range(0, len(texts), self.batch_size):
            inputs = tokenizer(
                text=texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                padding_side="right",
                add_special_tokens=False,
            ).to(device)
            scores.append(model(**inputs).logits[:, 0].float().cpu())
        return torch.cat(scores)

    def __call__(
        self, prompts: list, completions: list, completion_ids: list | None = None, **columns
    ) -> torch.Tensor:
        """Rewards per function, `(len(prompts), num_funcs)` float32; `None` outputs become NaN.

        Extra keyword arguments are dataset columns (one value per sample), forwarded to callables as TRL does.
        """
        if len(prompts) != len(completions):
            raise ValueError(
                f"Got {len(prompts)} prompts but {len(completions)} completions; pass one prompt per completion."
            )
        from .trainer._config_checks import checked_rewards  # imported here: the trainers import this module

        rewards = torch.empty(len(prompts), len(self.funcs))
        for i, (func, tokenizer) in enumerate(zip(self.funcs, self.tokenizers, strict=True)):
            if isinstance(func, nn.Module):
                rewards[:, i] = self._score_model(func, tokenizer, self._texts(prompts, completions, tokenizer))
                continue
            output = func(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)
            if inspect.isawaitable(output):
                output = asyncio.run(output)
            output = checked_rewards(output, self.names[i], len(prompts))  # a str, scalar, 2-D array: named error
            if len(output) != len(prompts):
                raise ValueError(
                    f"The reward function '{self.names[i]}' returned {len(output)} rewards for {len(prompts)} "
                    "completions; it must return exactly one reward (or None) per completion."
                )
            rewards[:, i] = torch.tensor([torch.nan if r is None else float(r) for r in output])
        return rewards

    def weighted(self, rewards_per_func: torch.Tensor) -> torch.Tensor:
        """Scalar reward per sample: weighted nansum over functions; NaN where every function returned None."""
        total = (rewards_per_func * self.weights).nansum(dim=1)
        return total.masked_fill(torch.isnan(rewards_per_func).all(dim=1), torch.nan)

    def check_finite(self, rewards_per_func: torch.Tensor) -> None:
        """Raise if any function returned inf, or if every function skipped a sample (its reward would be NaN)."""
        if torch.isinf(rewards_per_func).any():
            bad = self.names[int(torch.isinf(rewards_per_func).any(dim=0).nonzero()[0])]
            raise ValueError(f"The reward function '{bad}' returned an infinite reward; return finite values or None.")
        unscored = torch.isnan(rewards_per_func).all(dim=1)
        if unscored.any():
            raise ValueError(
                f"{int(unscored.sum())} completion(s) got no reward: every reward function returned None or NaN for "
                f"them (functions: {self.names}). Make at least one function return a finite reward for each sample."
            )

"""Offline reward scoring with TRL's `reward_funcs` conventions (docs/bon_sft_trainer.md; a parity test pins them), for
the sampler, vBoN's reference cache and the evaluation; and the checks of reward functions (docs/reliability.md)."""

import asyncio
import inspect
import numbers
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .identity import callable_identity, check_model_path, model_identity, tokenizer_identity


RewardFunc = str | nn.Module | Callable[..., list[float | None]]


def reward_func_name(func: RewardFunc) -> str:
    """The name TRL gives a reward function in its logs (model id basename or the callable's `__name__`)."""
    if isinstance(func, nn.Module):
        return func.config._name_or_path.rstrip("/").split("/")[-1]
    return getattr(func, "__name__", type(func).__name__)


def check_reward_funcs(reward_funcs, model_init_kwargs: dict | None = None) -> None:
    """Refuse early a missing reward-model path and a causal LM as reward model (its score head would be random)."""
    from transformers import AutoConfig, PreTrainedModel

    kwargs = model_init_kwargs or {}
    for func in reward_funcs if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]:
        if isinstance(func, str):  # its config only: no weights load before the check
            check_model_path(func, "reward model")
            revision, remote_code = kwargs.get("revision"), kwargs.get("trust_remote_code", False)
            config = AutoConfig.from_pretrained(func, revision=revision, trust_remote_code=remote_code)
            name, architectures = func, config.architectures
        elif isinstance(func, PreTrainedModel):
            name, architectures = func.config._name_or_path, [type(func).__name__]
        else:
            continue
        generative = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
        if architectures and all(architecture.endswith(generative) for architecture in architectures):
            raise ValueError(
                f"The reward model {name!r} is a {', '.join(architectures)}, not a sequence classifier: loading it "
                "with `AutoModelForSequenceClassification(num_labels=1)` would add a randomly initialised head, and "
                "its rewards would be noise. Pass a reward model trained as a `num_labels=1` sequence classifier "
                "(e.g. with TRL's `RewardTrainer`), or score with a reward callable."
            )


def check_reward_tokenizers(reward_funcs, tokenizers, given=None) -> None:
    """Refuse a reward model's tokenizer that cannot be its own; warn if a `given` one looks like another model's."""
    if not isinstance(given, (list, tuple)):
        given = [given] * len(reward_funcs)
    for model, tokenizer, passed in zip(reward_funcs, tokenizers, given, strict=True):
        if not isinstance(model, nn.Module) or tokenizer is None:
            continue
        name = model.config._name_or_path
        size, vocab = len(tokenizer), model.get_input_embeddings().num_embeddings
        problems = [f"{size} tokens but the model embeds only {vocab}:"] if size > vocab else []
        if size * 2 < vocab:  # embeddings are padded to a multiple of 64 or so, never to twice the vocabulary
            problems.append(f"{size} tokens but the model embeds {vocab}: it uses less than half of them, so")
        for special in ("pad_token_id", "eos_token_id", "bos_token_id"):
            token_id = getattr(tokenizer, special, None)
            if isinstance(token_id, int) and not 0 <= token_id < vocab:
                problems.append(f"{special}={token_id}, outside the model's {vocab} embeddings:")
        if problems:
            raise ValueError(
                f"The tokenizer given for the reward model {name!r} has {problems[0]} it is another model's "
                "tokenizer. Pass the reward model's own tokenizer in `reward_processing_classes` (or None to load it "
                "from its folder)."
            )
        if passed is None:
            continue
        mismatches = []
        tokenizer_name = (tokenizer.name_or_path or "").rstrip("/")
        if tokenizer_name and name and tokenizer_name != name.rstrip("/"):
            mismatches.append(f"it was loaded from {tokenizer_name!r}")
        for special in ("eos_token_id", "bos_token_id"):
            expected, got = getattr(model.config, special, None), getattr(tokenizer, special, None)
            if isinstance(expected, int) and got is not None and expected != got:
                mismatches.append(f"its {special} is {got}, the model's {expected}")
        if mismatches:
            warnings.warn(
                f"The tokenizer given for the reward model {name!r} may be another model's: {'; '.join(mismatches)}. "
                "Rewards computed with the wrong tokenizer are meaningless.",
                stacklevel=3,
            )


def reward_values(output, name: str, count: int) -> torch.Tensor:
    """A reward callable's output as a `(count,)` float tensor (None → NaN, bools 0/1), or an error naming `name`."""
    if isinstance(output, torch.Tensor) or type(output).__module__.startswith("numpy"):
        shape = tuple(output.shape)
        if len(shape) != 1:
            raise ValueError(
                f"The reward function '{name}' returned a {type(output).__name__} of shape {shape}; it must return "
                f"one reward per completion: a list (or 1-D tensor) of {count} floats."
            )
        output = output.tolist()
    if isinstance(output, (str, bytes)) or not isinstance(output, Sequence):
        raise ValueError(
            f"The reward function '{name}' returned {type(output).__name__} {output!r:.60}; it must return a list of "
            f"{count} floats (or None), one per completion."
        )
    if len(output) != count:
        raise ValueError(
            f"The reward function '{name}' returned {len(output)} rewards for {count} completions; it must return "
            "exactly one reward (or None) per completion."
        )
    for i, value in enumerate(output):
        scalar = isinstance(value, numbers.Real) or (isinstance(value, torch.Tensor) and value.numel() == 1)
        if value is not None and not scalar:
            raise ValueError(
                f"The reward function '{name}' returned {type(value).__name__} {value!r:.60} for completion {i}; "
                "each reward must be a number (int or float) or None."
            )
    return torch.tensor([torch.nan if r is None else float(r) for r in output])


def check_finite_rewards(rewards_per_func: torch.Tensor, names: Sequence[str], why: str = ".") -> None:
    """Refuse, in `(samples, functions)` rewards, an infinite one and a sample no function scored (its reward: NaN)."""
    infinite = torch.isinf(rewards_per_func).any(dim=0)
    if infinite.any():
        bad = names[int(infinite.nonzero()[0])]
        raise ValueError(
            f"The reward function '{bad}' returned an infinite reward; clip or fix it to return finite values or "
            f"None{why}"
        )
    unscored = torch.isnan(rewards_per_func).all(dim=1)
    if unscored.any():
        raise ValueError(
            f"{int(unscored.sum())} completion(s) got no reward: every reward function returned None or NaN for "
            f"them (functions: {list(names)}). Make at least one function return a number for each sample{why}"
        )


def weighted_rewards(rewards_per_func: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The scalar reward of each sample as TRL's trainers compute it from `(samples, functions)` rewards: the weighted
    `nansum` over functions; NaN where every function returned None."""
    total = (rewards_per_func * weights.to(rewards_per_func.device)).nansum(dim=1)
    return total.masked_fill(torch.isnan(rewards_per_func).all(dim=1), torch.nan)


def reward_signature(funcs: Sequence, weights: Sequence[float], tokenizers: Sequence) -> dict:
    """What identifies weighted reward functions (and reward models' tokenizers) for caches: see `trl_bon.identity`."""
    identities = []
    for func, tokenizer in zip(funcs, tokenizers, strict=True):
        if isinstance(func, nn.Module):  # a reward model reads the tokens of its own tokenizer and chat template
            read = {"tokenizer": tokenizer_identity(tokenizer)} if tokenizer is not None else {}
            identities.append({**model_identity(func), **read})
        else:
            identities.append(func if isinstance(func, str) else callable_identity(func))
    return {
        "reward_funcs": [reward_func_name(f) for f in funcs],
        "reward_weights": [float(w) for w in weights],
        "identities": identities,
    }


def as_scorer(reward) -> "RewardScorer":
    return reward if isinstance(reward, RewardScorer) else RewardScorer(reward)


class RewardScorer:
    """Scores prompt/completion pairs outside any trainer with TRL-style `reward_funcs` (model ids/paths,
    `PreTrainedModel` sequence classifiers or callables, as for [`~trl.RLOOTrainer`]). Reward models given as strings
    load with `model_init_kwargs`, their tokenizers from their path unless `reward_processing_classes` gives them."""

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
        model_init_kwargs = model_init_kwargs or {}
        check_reward_funcs(funcs, model_init_kwargs)
        self.funcs, self.tokenizers = [], []
        for func, tokenizer in zip(funcs, reward_processing_classes, strict=True):
            if isinstance(func, str):
                func = AutoModelForSequenceClassification.from_pretrained(func, num_labels=1, **model_init_kwargs)
            if isinstance(func, PreTrainedModel):
                func.eval()
                if device is not None:
                    func.to(device)
                if tokenizer is None:
                    tokenizer = AutoTokenizer.from_pretrained(func.config._name_or_path)
                if tokenizer.pad_token_id is None:
                    tokenizer.pad_token = tokenizer.eos_token
                # The reward is read at the last non-pad token, so the model must know the tokenizer's pad id.
                func.config.get_text_config().pad_token_id = tokenizer.pad_token_id
            self.funcs.append(func)
            self.tokenizers.append(tokenizer)
        check_reward_tokenizers(self.funcs, self.tokenizers, reward_processing_classes)
        self.names = [reward_func_name(f) for f in self.funcs]
        self.weights = torch.tensor(reward_weights if reward_weights is not None else [1.0] * len(funcs))
        self.batch_size = batch_size
        self.chat_template_kwargs = chat_template_kwargs or {}
        self._signature = None

    def signature(self) -> dict:
        """[`reward_signature`] of these functions, computed once."""
        if self._signature is None:
            self._signature = reward_signature(self.funcs, self.weights.tolist(), self.tokenizers)
        return self._signature

    @torch.inference_mode()
    def _score_model(self, model, tokenizer, prompts: list, completions: list) -> torch.Tensor:
        from trl import apply_chat_template, is_conversational

        texts = [p + c for p, c in zip(prompts, completions, strict=True)]  # strings, or lists of messages
        if is_conversational({"prompt": prompts[0]}):
            texts = [
                apply_chat_template({"messages": m}, tokenizer, **self.chat_template_kwargs)["text"] for m in texts
            ]
        encoding = dict(return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
        scores = []
        for start in range(0, len(texts), self.batch_size):
            inputs = tokenizer(texts[start : start + self.batch_size], **encoding).to(model.device)
            scores.append(model(**inputs).logits[:, 0].float().cpu())
        return torch.cat(scores)

    def __call__(
        self, prompts: list, completions: list, completion_ids: list | None = None, **columns
    ) -> torch.Tensor:
        """Rewards per function, `(len(prompts), num_funcs)` (None → NaN); `columns` go to callables, as in TRL."""
        if len(prompts) != len(completions):
            raise ValueError(
                f"Got {len(prompts)} prompts but {len(completions)} completions; pass one prompt per completion."
            )
        rewards = torch.empty(len(prompts), len(self.funcs))
        for i, (func, tokenizer) in enumerate(zip(self.funcs, self.tokenizers, strict=True)):
            if isinstance(func, nn.Module):
                rewards[:, i] = self._score_model(func, tokenizer, prompts, completions)
                continue
            output = func(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)
            if inspect.isawaitable(output):
                output = asyncio.run(output)
            rewards[:, i] = reward_values(output, self.names[i], len(prompts))
        return rewards

    def weighted(self, rewards_per_func: torch.Tensor) -> torch.Tensor:
        """Scalar reward per sample: weighted nansum over functions; NaN where every function returned None."""
        return weighted_rewards(rewards_per_func, self.weights)

    def check_finite(self, rewards_per_func: torch.Tensor) -> None:
        """[`check_finite_rewards`] of these functions' rewards."""
        check_finite_rewards(rewards_per_func, self.names)

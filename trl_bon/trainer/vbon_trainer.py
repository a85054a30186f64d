"""[`VBoNTrainer`]: variational Best-of-N (Amini et al., arXiv 2407.06057) on top of TRL's [`~trl.RLOOTrainer`].

KL(π‖π_BoN)/(N−1) is RLOO's objective with KL coefficient 1/(N−1) and the vBoN score as reward (docs/maths.md §5), so
the trainer only replaces the reward, in `_calculate_rewards` (via `super()`, no TRL code copied).
"""

import functools
import os

import torch
from accelerate.utils import gather
from datasets import Dataset

from .. import core
from ..core.vbon import vbon_scores
from ..identity import model_identity, tokenizer_identity
from ..ref_cache import (
    CACHE_COMMAND,
    add_reference_rewards,
    check_reference_reward_column,
    load_reference_reward_cache,
    reference_reward_tensor,
)
from ..rewards import check_finite_rewards, reward_signature, weighted_rewards
from ._bon_rloo import BoNRLOOTrainer
from ._papers import VBON_PAPER
from ._rloo_seams import replace_last_logged
from ._scoring_forwards import disable_all_dropout
from .vbon_config import VBoNConfig


class VBoNTrainer(BoNRLOOTrainer):
    r"""
    Trainer for variational Best-of-N (vBoN), introduced in [Variational Best-of-N
    Alignment](https://huggingface.co/papers/2407.06057). It fine-tunes the policy towards the Best-of-N
    distribution of the reference policy by minimising KL(π‖π_BoN) with RLOO: the reward of a completion is the vBoN
    score (log F̂ of its reward under the cached reference rewards of its prompt, or the exact log-ratio), and the KL
    coefficient is 1/(N−1).

    Each prompt needs M cached reference rewards, in the dataset column `args.reference_rewards_column` or joined
    from `args.reference_cache_dir` (default `<output_dir>/_reference_rewards`), built before training with
    `trl-bon cache-ref-rewards` or [`~trl_bon.ref_cache.build_reference_reward_cache`]; the example of
    docs/vbon_trainer.md ("Quick start") does both.

    Args:
        model (`str`, [`~transformers.PreTrainedModel`] or [`~peft.PeftModel`]):
            Model to train and π_ref, as in [`~trl.RLOOTrainer`]; pass a path unless PEFT (RLOO loads π_ref from it).
        reward_funcs:
            As in [`~trl.RLOOTrainer`]; the same functions and weights as the reference cache's.
        args ([`VBoNConfig`]):
            `num_candidates` is required.
        train_dataset ([`~datasets.Dataset`] or [`~datasets.IterableDataset`]):
            A `Dataset` without the reference-reward column gets it joined from the cache at init; an
            `IterableDataset` must have it.
        eval_dataset, processing_class, reward_processing_classes, callbacks, optimizers, quantization_config,
        peft_config:
            As in [`~trl.RLOOTrainer`].
    """

    _tag_names = ["trl", "vbon", "trl-bon"]
    _name = "vBoN"
    _win_rate_vs_ref_metric = "win_rate_vs_ref"  # against the cached π_ref rewards, for `effective_n_win`
    _paper = VBON_PAPER

    def __init__(
        self,
        model,
        reward_funcs,
        args: VBoNConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        reward_processing_classes=None,
        callbacks=None,
        optimizers=(None, None),
        quantization_config=None,
        peft_config=None,
    ):
        if not isinstance(args, VBoNConfig):
            raise ValueError(
                "VBoNTrainer needs a `VBoNConfig` with `num_candidates` (N) set, e.g. `VBoNConfig('out', "
                f"num_candidates=4)`; got {'None' if args is None else type(args).__name__}."
            )
        settings = {"method": "vbon", "num_candidates": args.num_candidates, "vbon_objective": args.vbon_objective}
        self._check_early(args, settings, model, peft_config, train_dataset, eval_dataset)
        given = {"train_dataset": train_dataset, "eval_dataset": eval_dataset}
        if isinstance(eval_dataset, dict):
            given.update({f"eval_dataset[{key!r}]": dataset for key, dataset in eval_dataset.items()})
        for name, dataset in given.items():  # a NaN or empty reference CDF would fail the first step
            if isinstance(dataset, Dataset) and args.reference_rewards_column in dataset.column_names:
                check_reference_reward_column(dataset, args.reference_rewards_column, name)
        super().__init__(
            model=model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            reward_processing_classes=reward_processing_classes,
            callbacks=callbacks,
            optimizers=optimizers,
            quantization_config=quantization_config,
            peft_config=peft_config,
        )
        # `disable_dropout` is forced (see `VBoNConfig`); RLOO's `disable_dropout_in_model` misses the float attention
        # rates some models read directly (e.g. Llama's `attention_dropout`).
        for scored in (self.model, self.ref_model):
            if scored is not None:
                disable_all_dropout(scored)
        if float((self.reward_weights**2).sum()) == 0.0:
            raise ValueError("All `reward_weights` are 0, so every reward is 0; give at least one function a weight.")
        self.train_dataset = self._attach_reference_rewards(self.train_dataset, "train_dataset")
        self.eval_dataset = self._attach_reference_rewards(self.eval_dataset, "eval_dataset")

    def _card_settings(self) -> dict[str, object]:
        args = self.args
        return {
            "N (Best-of-N)": args.num_candidates,
            "objective": f"`{args.vbon_objective}`" + (" (code scaling)" if args.reproduce_vbon_code_scaling else ""),
            "β (KL coefficient, 1/(N−1))": args.beta,
            "samples per prompt (RLOO group)": args.num_generations,
        }

    @functools.cached_property
    def _reference_cache(self):
        """The reference-reward cache of this run, loaded once and checked against its settings, rewards and π_ref."""
        args = self.args
        cache_dir = args.reference_cache_dir or os.path.join(args.output_dir, "_reference_rewards")
        if not os.path.isfile(os.path.join(cache_dir, "metadata.json")):
            raise ValueError(
                f"The training data has no {args.reference_rewards_column!r} column of cached reference rewards and "
                f"there is no cache in {cache_dir!r}. vBoN does not sample before training: build the cache first "
                f"with `{CACHE_COMMAND}` (same config; it writes `reference_cache_dir`, default "
                "`<output_dir>/_reference_rewards`) or `trl_bon.ref_cache.build_reference_reward_cache`, then pass "
                "`reference_cache_dir`, or add the column yourself (`trl_bon.ref_cache.add_reference_rewards`)."
            )
        cache = load_reference_reward_cache(cache_dir)
        with self._reference_model() as ref_model:  # π_ref's content fingerprint, not its path
            identity = model_identity(self.accelerator.unwrap_model(ref_model))
        cache.check_compatible(
            args.generation_settings,
            reward_signature(self.reward_funcs, self.reward_weights.tolist(), self.reward_processing_classes),
            identity,
            tokenizer_identity(getattr(self.processing_class, "tokenizer", self.processing_class)),
        )
        return cache

    def _attach_reference_rewards(self, dataset, name: str):
        """Return `dataset` (or each of a dict) with the reference-reward column, joined from the cache if missing."""
        if isinstance(dataset, dict):
            return {key: self._attach_reference_rewards(value, f"{name}[{key!r}]") for key, value in dataset.items()}
        column = self.args.reference_rewards_column
        if dataset is None or column in (dataset.column_names or []):
            return dataset
        if not isinstance(dataset, Dataset):
            raise ValueError(
                f"`{name}` is a {type(dataset).__name__} without a {column!r} column; join the cached reference "
                f"rewards beforehand (`trl_bon.ref_cache.add_reference_rewards`, cache built with `{CACHE_COMMAND}`)."
            )
        return add_reference_rewards(
            dataset, self._reference_cache, column, prompt_id_column=self.args.prompt_id_column
        )

    def _reference_sequence_logps(self, completion_ids_list) -> torch.Tensor:
        """log π_ref(y|x) of this process's samples over their completion tokens, from the reference forward RLOO has
        just run for its KL penalty (recorded by `ScoringForwardsMixin`)."""
        ref_per_token = self._scoring_forwards[1]
        lengths = torch.tensor([len(ids) for ids in completion_ids_list], device=ref_per_token.device)
        mask = torch.arange(ref_per_token.size(1), device=ref_per_token.device) < lengths.unsqueeze(1)
        return (ref_per_token * mask).sum(1)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        """Replace the raw rewards `(B_global, n_funcs)` by the vBoN score (computed on this process's rows, then
        gathered), spread over the columns as `score·w_j/Σ_k w_k²` so that RLOO's `Σ_j w_j·column_j` is the score."""
        raw = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        check_finite_rewards(raw, self.reward_func_names, ": vBoN places every reward in the reference-reward CDF.")
        rewards = weighted_rewards(raw, self.reward_weights)
        rank = self.accelerator.process_index
        local = slice(rank * len(prompts), (rank + 1) * len(prompts))
        column = self.args.reference_rewards_column
        ref_rewards = reference_reward_tensor([example[column] for example in inputs], device=raw.device)
        exact = self.args.vbon_objective == "exact"
        ref_logps = self._reference_sequence_logps(completion_ids_list) if exact else None
        scores = vbon_scores(
            rewards[local],
            ref_rewards,
            self.args.num_candidates,
            self.args.vbon_objective,
            ref_logps=ref_logps,
            reproduce_code_scaling=self.args.reproduce_vbon_code_scaling,
        )
        score = gather(scores["score"])
        metrics = self._mode_metrics
        metrics["vbon/score"].append(score.mean().item())  # what RLOO trains on, before its KL term
        metrics["vbon/log_cdf"].append(gather(scores["log_cdf"]).mean().item())
        metrics["vbon/frac_below_all_ref"].append(gather(scores["at_floor"].float()).mean().item())
        if exact:
            metrics["vbon/exact_score"].append(score.mean().item())
        # Win rate against the prompt's cached π_ref rewards (ties ½), the same quantity as `trl-bon eval`'s.
        metrics["win_rate_vs_ref"].append(gather(core.win_rate(rewards[local], ref_rewards)).mean().item())
        self._vbon_raw_rewards, self._vbon_scores = raw, score
        weights = self.reward_weights.to(raw.device)
        return score.unsqueeze(1) * weights / (weights**2).sum()

    def _generate_and_score_completions(self, inputs):
        with self._record_scoring_forwards() as forwards:  # `_calculate_rewards` reads the reference forward
            output = super()._generate_and_score_completions(inputs)
        # RLOO logged the vBoN score as `reward` / `rewards/<func>/*` and in the completions table; the vocabulary
        # (docs/metrics.md) keeps the raw reward there, and the score in `vbon/score`.
        raw = self._vbon_raw_rewards
        self._log_policy_rewards(raw)
        for i, name in enumerate(self.reward_func_names):
            replace_last_logged(self._logs["rewards"][name], raw[:, i].tolist())
        seq_kl = torch.zeros_like(self._vbon_scores)  # β = 0: no reference forward, no KL term
        if len(forwards) == 2:  # policy (`old_logps`) and reference (KL penalty) forwards: KL to π_ref is free
            self._log_kl_to_ref(forwards[0], forwards[1], output["completion_mask"])
            seq_kl = self.accelerator.gather(core.kl_k1(forwards[0], forwards[1], output["completion_mask"]))
        objective = core.vbon_objective_estimate(self._vbon_scores, seq_kl, self.beta)
        self._mode_metrics["objective/vbon"].append(objective.item())  # `loss` is ≈ 0 by construction (metrics.md)
        return output

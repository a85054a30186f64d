"""[`BoNSFTTrainer`]: supervised fine-tuning on Best-of-N samples (BOND eqs. 12–13, β = 0; docs/maths.md §6), and
[`bon_sft_dataset`], its training set; RAFT/ReST-style rounds loop over trainers (`trl_bon/scripts/bon_sft.py`)."""

import hashlib
import json

import torch
from datasets import Dataset, IterableDataset
from transformers import PreTrainedTokenizerBase
from trl import SFTTrainer

from .._trl_compat import get_config_model_id
from ..quantization import keep_4bit_weights_trainable
from ..sampling import BestOfNOutput, tokenize_prompts
from ._checkpoint import CheckpointMixin, finetuning_settings
from ._config_checks import check_model_inputs, check_sft_batches
from ._model_card import BoNModelCardMixin
from ._papers import BOND_PAPER
from .bon_sft_config import BoNSFTConfig


BON_COLUMNS = ("input_ids", "completion_mask", "reward", "candidate_rewards")


def bon_sft_dataset(output: BestOfNOutput, tokenizer: PreTrainedTokenizerBase) -> Dataset:
    """The training set of [`BoNSFTTrainer`] from a [`~trl_bon.best_of_n`] result sampled with `tokenizer`:
    `prompt`, `completion`, `reward`, `candidate_rewards` (the N rewards, for the logs), and the sampled token ids as
    `input_ids` and `completion_mask`, since re-tokenised text can differ from them (docs/bon_sft_trainer.md)."""
    pairs = list(zip(tokenize_prompts(tokenizer, output.prompts, {}), output.completion_ids, strict=True))
    return Dataset.from_dict(
        {
            "prompt": output.prompts,
            "completion": output.completions,
            "reward": output.rewards.tolist(),
            "candidate_rewards": output.candidate_rewards.tolist(),
            "input_ids": [p + c for p, c in pairs],
            "completion_mask": [[0] * len(p) + [1] * len(c) for p, c in pairs],
        }
    )


def bon_data_fingerprint(dataset: Dataset) -> str:
    """Hash of what SFT trains on (token ids, loss mask, rewards): a checkpoint resumes only onto the same data."""
    content = [list(dataset[column]) for column in BON_COLUMNS]
    return hashlib.sha256(json.dumps(content, separators=(",", ":")).encode()).hexdigest()


class BoNSFTTrainer(BoNModelCardMixin, CheckpointMixin, SFTTrainer):
    r"""
    Trainer for Best-of-N distillation by supervised fine-tuning (BoN-SFT): [`~trl.SFTTrainer`] on the best of
    `num_candidates` completions per prompt, sampled from π_ref with [`~trl_bon.best_of_n`] (ties broken uniformly at
    random, seeded) and kept as exact token ids by [`bon_sft_dataset`]. The loss on the completion tokens is the
    forward KL `KL(π_BoN‖π_θ)`. The trainer never samples; one trainer trains one round and logs the `bon_sft/*`
    statistics of its data at the first log. Usage and rounds: docs/bon_sft_trainer.md.

    Args:
        model (`str`, [`~transformers.PreTrainedModel`] or [`~peft.PeftModel`]):
            The model the data was sampled from (id/path or instance).
        args ([`BoNSFTConfig`], *optional*):
            Defaults to `BoNSFTConfig(f"{model_name}-BoN-SFT")`; its `num_candidates` must be the N of the data.
        train_dataset ([`~datasets.Dataset`]):
            Best-of-N data from [`bon_sft_dataset`].
        processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            The tokenizer the data was sampled with; loaded from the model when `None`.
        data_collator, eval_dataset, compute_metrics, callbacks, optimizers, optimizer_cls_and_kwargs,
        preprocess_logits_for_metrics, quantization_config, peft_config:
            As for [`~trl.SFTTrainer`] (the loss on held-out Best-of-N data estimates the forward KL to π_BoN).
    """

    _tag_names = ["trl", "trl-bon", "sft", "bon-sft"]
    _name = "BoN-SFT"
    _paper = BOND_PAPER  # BoN-SFT is the forward-KL (β = 0) baseline of BOND

    def _card_settings(self) -> dict[str, object]:
        return {"N (Best-of-N)": self.args.num_candidates, "objective": "forward KL(π_BoN‖π), BOND eqs. 12–13 (β = 0)"}

    def __init__(
        self,
        model,
        args: BoNSFTConfig | None = None,
        data_collator=None,
        train_dataset: Dataset | None = None,
        eval_dataset=None,
        processing_class: PreTrainedTokenizerBase | None = None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        optimizer_cls_and_kwargs=None,
        preprocess_logits_for_metrics=None,
        quantization_config=None,
        peft_config=None,
    ):
        if args is None:
            model_id = model if isinstance(model, str) else get_config_model_id(model.config)
            args = BoNSFTConfig(f"{model_id.split('/')[-1]}-BoN-SFT")
        elif not isinstance(args, BoNSFTConfig):
            raise TypeError(
                f"`args` must be a `BoNSFTConfig`, got `{type(args).__name__}`; build one with the same fields."
            )
        if train_dataset is None or isinstance(train_dataset, IterableDataset):
            raise ValueError(
                "`train_dataset` is required and must be a `Dataset`: sample it first with "
                "`bon_sft_dataset(best_of_n(Sampler(model), prompts, reward_funcs, args.num_candidates), tokenizer)`."
            )
        missing = [column for column in BON_COLUMNS if column not in train_dataset.column_names]
        if missing:
            raise ValueError(
                f"`train_dataset` is not Best-of-N data (missing column(s) {missing}; columns: "
                f"{train_dataset.column_names}). BoNSFTTrainer only trains: build its data before it with "
                "`bon_sft_dataset(best_of_n(...), tokenizer)`, or train on fixed completions with `trl.SFTTrainer`."
            )
        if len(train_dataset) == 0:
            raise ValueError("`train_dataset` is empty: BoN-SFT needs at least one prompt.")
        num_candidates = len(train_dataset[0]["candidate_rewards"])
        if num_candidates != args.num_candidates:
            raise ValueError(
                f"`train_dataset` holds Best-of-{num_candidates} data, but "
                f"`args.num_candidates={args.num_candidates}`. Sample the data with the config's `num_candidates`, or "
                "set `num_candidates` to the N the data was made with."
            )
        check_sft_batches(len(train_dataset), args, "train_dataset")
        settings = {"method": "bon_sft", "num_candidates": args.num_candidates}
        settings["train_data_sha256"] = bon_data_fingerprint(train_dataset)
        self._init_checkpointing(args, {**settings, **finetuning_settings(model, peft_config)})
        check_model_inputs(model)  # last before any model loads: the cheaper checks above speak first
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
            quantization_config=quantization_config,
            peft_config=peft_config,
        )
        keep_4bit_weights_trainable(self.model)
        # The data's statistics, logged (averaged by SFTTrainer.log) at the first logging step.
        rewards = torch.tensor(train_dataset["candidate_rewards"], dtype=torch.float64)
        chosen = torch.tensor(train_dataset["reward"], dtype=torch.float64)
        num_maximal = (rewards == rewards.max(dim=1, keepdim=True).values).sum(dim=1)
        statistics = {
            "candidate_reward_mean": rewards.mean().item(),
            "candidate_reward_std": rewards.std().item() if rewards.numel() > 1 else 0.0,
            "chosen_reward_mean": chosen.mean().item(),
            "chosen_reward_std": chosen.std().item() if chosen.numel() > 1 else 0.0,
            "tie_fraction": (num_maximal > 1).double().mean().item(),
            "chosen_length_mean": sum(map(sum, train_dataset["completion_mask"])) / len(train_dataset),
        }
        self._metrics["train"].update({f"bon_sft/{key}": [value] for key, value in statistics.items()})

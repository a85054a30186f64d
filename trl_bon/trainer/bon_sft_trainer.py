"""[`BoNSFTTrainer`]: supervised fine-tuning on Best-of-N samples (algorithms.md §4), optionally iterated (RAFT-style).

BoN-SFT minimises the forward KL `KL(π_BoN‖π_θ)` (BOND with β = 0): sample N completions per prompt from the reference
model, keep the highest-reward one (ties at random), and fine-tune on the kept pairs with the loss on completion tokens
only. The data is built before `SFTTrainer.__init__`, so nothing private in TRL is touched; `num_rounds > 1` runs one
plain [`~trl.SFTTrainer`] per extra round on data sampled from the current policy.
"""

import copy
import hashlib
import json
import os
import time
from pathlib import Path

from datasets import Dataset, IterableDataset, load_from_disk
from transformers import AutoProcessor, PreTrainedTokenizerBase
from trl import SFTTrainer

from .._trl_compat import create_model_from_path, get_config_model_id
from ..identity import model_identity
from ..rewards import RewardScorer
from ..sampling import GenerationSettings, Sampler, best_of_n, tokenize_prompts
from ._papers import BOND_PAPER
from .bon_sft_config import BoNSFTConfig


def _check_prompt_dataset(dataset, name: str) -> None:
    """Fail before any sampling if `dataset` is not a non-empty, prompt-only `Dataset`."""
    if dataset is None:
        raise ValueError(f"`{name}` is required: pass a prompt-only dataset with a `prompt` column.")
    if isinstance(dataset, IterableDataset):
        raise TypeError(
            f"`{name}` is an `IterableDataset`; BoN-SFT samples every prompt up front. Materialise it first, e.g. "
            "`Dataset.from_list(list(dataset.take(num_prompts)))`."
        )
    columns = dataset.column_names
    if "prompt" not in columns:
        raise ValueError(
            f"`{name}` has no `prompt` column (columns: {columns}). BoN-SFT generates the completions itself: pass a "
            "prompt-only dataset, e.g. `dataset.rename_column('question', 'prompt')`."
        )
    given = [c for c in ("completion", "messages", "chosen", "text") if c in columns]
    if given:
        raise ValueError(
            f"`{name}` already holds completions (column(s) {given}), but BoN-SFT expects prompts only and samples "
            f"the completions itself. Drop them (`dataset.remove_columns({given})`), or train on fixed completions "
            "with `trl.SFTTrainer`."
        )
    if len(dataset) == 0:
        raise ValueError(f"`{name}` is empty: BoN-SFT needs at least one prompt.")


class BoNSFTTrainer(SFTTrainer):
    r"""
    Trainer for Best-of-N distillation by supervised fine-tuning (BoN-SFT) and its iterative variant (RAFT-style).

    For each prompt, `num_candidates` completions are sampled from the model being trained (the reference model π_ref
    at step 0) with [`~trl_bon.best_of_n`], scored with `reward_funcs` (TRL conventions, `reward_weights` included) and
    the best one is kept (ties broken uniformly at random, seeded). [`~trl.SFTTrainer`] then fine-tunes on the exact
    sampled token ids with the loss on the completion tokens only: the forward-KL objective `KL(π_BoN‖π_θ)`.

    With `num_rounds = R > 1`, [`~BoNSFTTrainer.train`] runs R rounds; round k ≥ 2 samples from the policy trained by
    round k − 1 and fine-tunes it with a fresh [`~trl.SFTTrainer`] (new optimizer, outputs in `output_dir/round-k`).

    Each round's data is saved to `output_dir/bon_data/round-k/` (`dataset/` and `metadata.json`: N, seed, sampling
    settings, reward signature, prompt hash and statistics) and the trainable weights after every non-final round to
    `round-k/trainable.safetensors`. Re-running with the same `output_dir` loads existing data instead of sampling
    again and restarts after the last finished round; data made with other settings raises an error.

    **Features and memory.** Sampling runs as a separate stage before training: with a model path only one copy of
    the model is resident at a time. LoRA (`peft_config`, or a [`~peft.PeftModel`]) and 8/4-bit bases
    (`quantization_config`, or a quantised instance) are sampled as-is. `use_vllm=True` samples with an offline vLLM
    engine built from the model path (one round only; not with 8-bit). Multi-process runs sample on the main process
    (others then load the saved data); ZeRO-3/FSDP sharded iterative rounds are not supported.

    Args:
        model (`str`, [`~transformers.PreTrainedModel`] or [`~peft.PeftModel`]):
            Model id/path or instance, as for [`~trl.SFTTrainer`]; it is also π_ref, the model sampled at round 1.
        reward_funcs (`RewardFunc`, `list[RewardFunc]` or [`~trl_bon.rewards.RewardScorer`]):
            Reward model ids/paths, sequence-classifier instances or callables, as for [`~trl.RLOOTrainer`]. Extra
            columns of `train_dataset` are passed to callables as keyword arguments.
        args ([`BoNSFTConfig`], *optional*):
            Configuration; defaults to `BoNSFTConfig(f"{model_name}-BoN-SFT")`.
        data_collator ([`~transformers.DataCollator`], *optional*):
            As for [`~trl.SFTTrainer`].
        train_dataset ([`~datasets.Dataset`]):
            Prompt-only dataset (`prompt` column, standard or conversational); a `completion`/`messages` column is an
            error.
        eval_dataset ([`~datasets.Dataset`] or `dict[str, Dataset]`, *optional*):
            Prompt–completion evaluation data, passed to [`~trl.SFTTrainer`] as is, e.g.
            `best_of_n(...).to_dataset()` on held-out prompts (its loss estimates the forward KL to π_BoN).
        processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            Tokenizer; loaded from the model when `None`.
        reward_processing_classes (`PreTrainedTokenizerBase` or `list`, *optional*):
            Tokenizers of the reward models, as for [`~trl.RLOOTrainer`].
        compute_metrics, callbacks, optimizer_cls_and_kwargs, preprocess_logits_for_metrics, quantization_config,
        peft_config:
            As for [`~trl.SFTTrainer`]; `callbacks` and `optimizer_cls_and_kwargs` apply to every round.
        optimizers (`tuple`, *optional*, defaults to `(None, None)`):
            As for [`~trl.SFTTrainer`]; only with `num_rounds=1` (use `optimizer_cls_and_kwargs` for several rounds).

    `formatting_func` and `compute_loss_func` of [`~trl.SFTTrainer`] are not taken: the data is a generated,
    pre-tokenised prompt–completion dataset.

    Example:

    ```python
    >>> from trl_bon import BoNSFTConfig, BoNSFTTrainer
    >>> from trl_bon.toy import build_one_token_task
    >>> task = build_one_token_task("/tmp/trl_bon_doc_bon_sft")
    >>> args = BoNSFTConfig(
    ...     "/tmp/trl_bon_doc_bon_sft/out", num_candidates=4, max_completion_length=1, use_cpu=True, bf16=False,
    ...     report_to="none", save_strategy="no", max_steps=2, disable_tqdm=True,
    ... )
    >>> trainer = BoNSFTTrainer(task.model_path, task.reward_func, args=args, train_dataset=task.dataset(16))
    >>> trainer.train_dataset.num_rows
    16
    >>> _ = trainer.train()
    ```
    """

    _tag_names = ["trl", "trl-bon", "sft", "bon-sft"]
    _name = "BoN-SFT"
    _paper = BOND_PAPER  # BoN-SFT is the forward-KL (β = 0) baseline of BOND

    def __init__(
        self,
        model,
        reward_funcs,
        args: BoNSFTConfig | None = None,
        data_collator=None,
        train_dataset: Dataset | None = None,
        eval_dataset=None,
        processing_class: PreTrainedTokenizerBase | None = None,
        reward_processing_classes=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        optimizer_cls_and_kwargs=None,
        preprocess_logits_for_metrics=None,
        quantization_config=None,
        peft_config=None,
    ):
        model_id = model if isinstance(model, str) else get_config_model_id(model.config)
        if args is None:
            args = BoNSFTConfig(f"{model_id.split('/')[-1]}-BoN-SFT")
        elif not isinstance(args, BoNSFTConfig):
            raise TypeError(
                f"`args` must be a `BoNSFTConfig`, got `{type(args).__name__}`; build one with the same fields."
            )

        # Everything that can fail cheaply fails before any model is loaded or sampled.
        _check_prompt_dataset(train_dataset, "train_dataset")
        if args.num_rounds > 1 and optimizers != (None, None):
            raise ValueError(
                "`optimizers` holds one optimizer/scheduler, but each of the `num_rounds` rounds needs a fresh one. "
                "Pass `optimizer_cls_and_kwargs=(OptimizerClass, kwargs)` instead, or set `num_rounds=1`."
            )
        init_kwargs = dict(args.model_init_kwargs or {})
        if quantization_config is not None:
            if "quantization_config" in init_kwargs:
                raise ValueError(
                    "You set `quantization_config` both as a trainer argument and in `args.model_init_kwargs`. Set it "
                    "in only one place, preferably as a trainer argument."
                )
            init_kwargs["quantization_config"] = quantization_config
        loads_8bit = bool(getattr(init_kwargs.get("quantization_config"), "load_in_8bit", False))
        if args.use_vllm and (loads_8bit or getattr(model, "is_loaded_in_8bit", False)):
            raise ValueError(
                "vLLM does not support in-flight 8-bit quantization. Set `use_vllm=False`, or load the model in 4-bit "
                "(`BitsAndBytesConfig(load_in_4bit=True)`)."
            )
        if args.use_vllm and not isinstance(model, str):
            raise ValueError(
                "`use_vllm=True` builds its engine from the model path: pass `model` as a path or id (with "
                "`peft_config`/`quantization_config` for LoRA or 4-bit training), or set `use_vllm=False`."
            )
        if processing_class is None:
            revision = init_kwargs.get("revision") if isinstance(model, str) else None
            processing_class = AutoProcessor.from_pretrained(
                model_id, revision=revision, trust_remote_code=args.trust_remote_code
            )
        if not isinstance(processing_class, PreTrainedTokenizerBase):
            raise TypeError(
                "BoN-SFT is text-only: `processing_class` must be a tokenizer, got "
                f"`{type(processing_class).__name__}`."
            )
        if processing_class.pad_token is None:  # what SFTTrainer would set; the sampler needs it now
            processing_class.pad_token = args.pad_token or processing_class.eos_token
        self.reward_scorer = (
            reward_funcs
            if isinstance(reward_funcs, RewardScorer)
            else RewardScorer(
                reward_funcs,
                reward_processing_classes=reward_processing_classes,
                reward_weights=args.reward_weights,
                device=args.device,
            )
        )
        self.prompt_dataset = train_dataset
        self._round_kwargs = dict(
            data_collator=data_collator,
            eval_dataset=eval_dataset,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        )

        # Round 1: Best-of-N of π_ref, built before `SFTTrainer.__init__`. A path is loaded for sampling (or given to
        # vLLM) and released before SFTTrainer loads it again, so only one copy is resident at a time.
        if isinstance(model, str) and not args.use_vllm:
            sampler = create_model_from_path(model, **{"trust_remote_code": args.trust_remote_code, **init_kwargs})
        else:
            sampler = model
        bon_dataset, round_metrics = self._round_dataset(1, sampler, args, processing_class)
        del sampler

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=bon_dataset,
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
        # Logged (averaged by SFTTrainer.log) at the round's first logging step.
        self._metrics["train"].update({key: [value] for key, value in round_metrics.items()})

    # ------------------------------------------------------------------------------------------------------------
    # Best-of-N data, one directory per round

    def _round_dir(self, round_index: int, args: BoNSFTConfig | None = None) -> Path:
        return Path((args or self.args).output_dir) / "bon_data" / f"round-{round_index}"

    def _round_metadata(self, round_index: int, args: BoNSFTConfig) -> dict:
        """What the round's data depends on; a saved round is reused only if this matches."""
        prompts = json.dumps(list(self.prompt_dataset["prompt"]), sort_keys=True, default=str)
        return {
            "round": round_index,
            "num_candidates": args.num_candidates,
            "seed": args.seed + round_index - 1,
            "tie_break": args.tie_break,
            "generation_settings": GenerationSettings.from_trainer_args(args).to_dict(),
            "reward_signature": self.reward_scorer.signature(),
            "num_prompts": len(self.prompt_dataset),
            "prompts_sha256": hashlib.sha256(prompts.encode()).hexdigest(),
        }

    def _round_dataset(self, round_index: int, policy, args: BoNSFTConfig, tokenizer) -> tuple[Dataset, dict]:
        """Load the round's Best-of-N data if it was saved with the same settings, else sample and save it."""
        directory = self._round_dir(round_index, args)
        metadata = self._round_metadata(round_index, args)
        # The model by content, not path: another model run in the same output_dir must not reuse this data.
        metadata["model"] = {"path": policy} if isinstance(policy, str) else model_identity(policy)
        with args.main_process_first(local=False, desc=f"Best-of-N data, round {round_index}"):
            if (directory / "metadata.json").exists():
                saved = json.loads((directory / "metadata.json").read_text())
                stale = {key: (saved.get(key), value) for key, value in metadata.items() if saved.get(key) != value}
                if stale:
                    raise ValueError(
                        f"{directory} holds Best-of-N data made with other settings (saved vs now: {stale}). Delete "
                        "that directory to sample again, or use another `output_dir`."
                    )
                return load_from_disk(str(directory / "dataset")), saved["metrics"]
            dataset, metrics = self._sample_round(round_index, policy, args, tokenizer, metadata["seed"])
            if args.process_index == 0:
                dataset.save_to_disk(str(directory / "dataset"))
                # metadata.json is written last (atomically): its presence marks the round's data as complete.
                tmp = directory / "metadata.json.tmp"
                saved = {**metadata, "model_name": self._model_name(policy), "metrics": metrics}
                tmp.write_text(json.dumps(saved, indent=2))
                os.replace(tmp, directory / "metadata.json")
        return dataset, metrics

    @staticmethod
    def _model_name(policy) -> str:
        return policy if isinstance(policy, str) else get_config_model_id(policy.config)

    def _sample_round(self, round_index, policy, args, tokenizer, seed) -> tuple[Dataset, dict]:
        """Best-of-N of `policy` on every prompt, as a pre-tokenised prompt–completion dataset."""
        prompts = list(self.prompt_dataset["prompt"])
        columns = {c: list(self.prompt_dataset[c]) for c in self.prompt_dataset.column_names if c != "prompt"}
        start = time.perf_counter()
        sampler = Sampler(
            policy,
            GenerationSettings.from_trainer_args(args),
            tokenizer=tokenizer,
            batch_size=args.generation_batch_size,
            backend="vllm" if args.use_vllm else "transformers",
            seed=seed,
            vllm_kwargs=args.vllm_kwargs,
            progress=not args.disable_tqdm,
        )
        output = best_of_n(
            sampler, {"prompt": prompts, **columns}, self.reward_scorer, args.num_candidates, tie_break=args.tie_break
        )
        elapsed = time.perf_counter() - start
        # Train on the exact sampled token ids: re-tokenising decoded text can change the tokens, and SFTTrainer
        # would append an EOS to completions cut at `max_completion_length`, which the sampler never produced.
        prompt_ids = tokenize_prompts(tokenizer, prompts, {})
        dataset = Dataset.from_dict(
            {
                "prompt": prompts,
                "completion": output.completions,
                "reward": output.rewards.tolist(),
                "input_ids": [p + c for p, c in zip(prompt_ids, output.completion_ids, strict=True)],
                "completion_mask": [
                    [0] * len(p) + [1] * len(c) for p, c in zip(prompt_ids, output.completion_ids, strict=True)
                ],
            }
        )
        rewards = output.candidate_rewards
        num_maximal = (rewards == rewards.max(dim=1, keepdim=True).values).sum(dim=1)
        metrics = {
            "bon_sft/round": float(round_index),
            "bon_sft/candidate_reward_mean": rewards.mean().item(),
            "bon_sft/candidate_reward_std": rewards.std().item() if rewards.numel() > 1 else 0.0,
            "bon_sft/chosen_reward_mean": output.rewards.mean().item(),
            "bon_sft/chosen_reward_std": output.rewards.std().item() if len(prompts) > 1 else 0.0,
            "bon_sft/tie_fraction": (num_maximal > 1).float().mean().item(),
            "bon_sft/chosen_length_mean": sum(map(len, output.completion_ids)) / len(prompts),
            "bon_sft/sampling_time_s": elapsed,
            "bon_sft/completions_per_s": rewards.numel() / elapsed,
        }
        return dataset, metrics

    # ------------------------------------------------------------------------------------------------------------
    # Rounds

    def _finished_rounds(self) -> int:
        """Number of leading rounds whose trained weights were saved (never the last round)."""
        done = 0
        while done + 1 < self.args.num_rounds and (self._round_dir(done + 1) / "trainable.safetensors").exists():
            done += 1
        return done

    def _save_round_weights(self, round_index: int) -> None:
        from safetensors.torch import save_file

        if self.args.process_index == 0:
            weights = {n: p.detach().cpu().contiguous() for n, p in self.model.named_parameters() if p.requires_grad}
            path = self._round_dir(round_index)
            save_file(weights, str(path / "trainable.safetensors.tmp"))
            os.replace(path / "trainable.safetensors.tmp", path / "trainable.safetensors")
        self.accelerator.wait_for_everyone()

    def _load_round_weights(self, round_index: int) -> None:
        from safetensors.torch import load_file

        weights = load_file(str(self._round_dir(round_index) / "trainable.safetensors"))
        unexpected = self.model.load_state_dict(weights, strict=False).unexpected_keys
        if unexpected:
            raise ValueError(
                f"{self._round_dir(round_index)} holds weights of another model ({unexpected[:3]}…). Delete "
                "`bon_data/` to start over, or use another `output_dir`."
            )

    def _round_trainer(self, round_index: int) -> SFTTrainer:
        """A fresh SFTTrainer for round ≥ 2, on Best-of-N data sampled from the current policy."""
        args = copy.copy(self.args)
        args.output_dir = os.path.join(self.args.output_dir, f"round-{round_index}")
        dataset, metrics = self._round_dataset(round_index, self.model, self.args, self.processing_class)
        trainer = SFTTrainer(
            model=self.model,
            args=args,
            train_dataset=dataset,
            processing_class=self.processing_class,
            **self._round_kwargs,
        )
        trainer._metrics["train"].update({key: [value] for key, value in metrics.items()})
        return trainer

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None):
        """Run every remaining round; returns the last round's [`~transformers.trainer_utils.TrainOutput`].

        Rounds whose weights are saved under `output_dir/bon_data/` are skipped (their weights are loaded); then the
        next round trains, `resume_from_checkpoint` applying to it only.
        """
        finished = self._finished_rounds()
        if finished:
            self._load_round_weights(finished)
        output = None
        for round_index in range(finished + 1, self.args.num_rounds + 1):
            resume = resume_from_checkpoint if round_index == finished + 1 else None
            if round_index == 1:
                output = super().train(resume, trial, ignore_keys_for_eval)
            else:
                trainer = self._round_trainer(round_index)
                output = trainer.train(resume, trial, ignore_keys_for_eval)
                self.state.log_history.extend(trainer.state.log_history)
            if round_index < self.args.num_rounds:
                self._save_round_weights(round_index)
        return output

"""J-BOND and BOND on top of TRL's `RLOOTrainer` (Sessa et al., arXiv 2407.14622 v1).

The trainer wraps three RLOO hooks via `super()` and copies none of their bodies; docs/jbond_trainer.md ("How it maps
onto RLOO") says what each does. Rewrites of RLOO's state go through the named seams of `_rloo_seams.py`.
"""

import copy
import time
from contextlib import nullcontext

import torch
from accelerate.utils import is_peft_model
from datasets import Dataset, IterableDataset

from .. import core
from .._trl_compat import (
    add_fused_lm_head,
    create_model_from_path,
    disable_gradient_checkpointing,
    get_config_model_id,
    prepare_deepspeed,
    prepare_fsdp,
    vllm_engine_kwargs,
)
from ..anchor import AnchorCallback, LoraAnchor, ModelAnchor, check_anchor_engine
from ..rewards import check_finite_rewards, weighted_rewards
from ..sampling import eval_mode
from ..vllm_adapters import VLLMAdapters, check_adapter_servable
from ._bon_rloo import BoNRLOOTrainer
from ._papers import BOND_PAPER
from ._rloo_seams import (
    force_vllm_weight_sync,
    generate_with_adapter_names,
    replace_last_logged,
    rloo_generation_model,
    rloo_group_size,
    save_selected_adapters,
)
from ._scoring_forwards import OLD_LOGPS_SKIPPED, disable_all_dropout
from .jbond_config import JBondConfig, is_8bit, vllm_8bit_error


class JBondTrainer(BoNRLOOTrainer):
    r"""
    Trainer for J-BOND and BOND (Best-of-N distillation), proposed in [BOND: Aligning LLMs with Best-of-N
    Distillation](https://huggingface.co/papers/2407.14622).

    The policy π is trained to match Best-of-N of an anchor π_a by minimising the Jeffreys divergence
    `(1−β)·KL(π_BoN‖π) + β·KL(π‖π_BoN)`: SFT (weight 1−β) on the best of k anchor samples plus REINFORCE (weight β)
    on one policy sample. `mode="jbond"` (default, Alg. 2) draws k = 2 with an EMA anchor, `mode="bond"` (eq. 15)
    k = `num_quantile_samples` for a quantile reward; docs/jbond_trainer.md gives the rewards and anchors. With LoRA
    the anchor is a second adapter of the same [`~peft.PeftModel`]; with full fine-tuning, a second copy of the model.

    Example:

    ```python
    >>> import tempfile
    >>> from trl_bon import JBondConfig, JBondTrainer
    >>> from trl_bon.toy import build_one_token_task

    >>> task = build_one_token_task(tempfile.mkdtemp())  # tiny offline model, 6 one-token outcomes
    >>> args = JBondConfig(
    ...     output_dir=tempfile.mkdtemp(), max_completion_length=1, max_steps=2, use_cpu=True, bf16=False,
    ...     report_to="none",
    ... )
    >>> trainer = JBondTrainer(
    ...     model=task.model_path, reward_funcs=task.reward_func, args=args, train_dataset=task.dataset(32)
    ... )
    >>> trainer.train()  # doctest: +SKIP
    ```

    Args:
        model (`str`, [`~transformers.PreTrainedModel`] or [`~peft.PeftModel`]):
            As in [`~trl.RLOOTrainer`]. Pass a path where possible: the full fine-tuning anchor is loaded from it.
        reward_funcs:
            As in [`~trl.RLOOTrainer`]. A function may return `None` for a completion another function scores; a
            completion no function scores, or any infinite reward, raises a `ValueError`.
        args ([`JBondConfig`], *optional*):
            Defaults to `JBondConfig(f"{model_name}-J-BOND")`.
        train_dataset ([`~datasets.Dataset`] or [`~datasets.IterableDataset`]):
            Prompt dataset with a `"prompt"` column (standard or conversational, text only).
        eval_dataset, processing_class, reward_processing_classes, callbacks, optimizers, quantization_config,
        peft_config:
            As in [`~trl.RLOOTrainer`]; 8-bit quantization cannot be combined with `use_vllm`.
    """

    _tag_names = ["trl", "trl-bon", "j-bond", "bond"]
    _takes_images = False
    _name = "J-BOND"
    _paper = BOND_PAPER

    @property
    def _win_rate_vs_ref_metric(self) -> str | None:
        # Only a fixed anchor is π_ref, against whose samples `effective_n_win` needs the win rate (docs/metrics.md).
        return "jbond/win_rate_vs_anchor" if self.args.anchor == "fixed" else None

    def __init__(
        self,
        model,
        reward_funcs,
        args: JBondConfig | None = None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset=None,
        processing_class=None,
        reward_processing_classes=None,
        callbacks=None,
        optimizers=(None, None),
        quantization_config=None,
        peft_config=None,
    ):
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = JBondConfig(f"{model_name.split('/')[-1]}-J-BOND")
        elif not isinstance(args, JBondConfig):
            raise TypeError(f"`args` must be a `JBondConfig`, got `{type(args).__name__}`; pass a `JBondConfig`.")

        # Everything that can fail cheaply fails before any model is loaded.
        settings = {"method": args.mode, "anchor": args.anchor, "num_candidates": args.num_candidates}
        settings["num_generations"] = args.num_generations
        self._check_early(args, settings, model, peft_config, train_dataset, eval_dataset)
        use_lora = peft_config is not None or (not isinstance(model, str) and is_peft_model(model))
        if args.use_vllm and (is_8bit(quantization_config) or getattr(model, "is_loaded_in_8bit", False)):
            raise vllm_8bit_error()
        if args.use_vllm and not use_lora:
            raise NotImplementedError(
                "With full fine-tuning the anchor is a second model, which would need a second vLLM engine. Train a "
                "LoRA adapter (`peft_config=LoraConfig(...)`; the anchor is then a second adapter that vLLM syncs) or "
                "set `use_vllm=False`."
            )
        check_anchor_engine(args, lora=use_lora)
        engine_kwargs = {}
        if args.vllm_adapters_as_lora:
            quantized = quantization_config or (args.model_init_kwargs or {}).get("quantization_config")
            if quantized is not None or getattr(model, "is_quantized", False):
                raise ValueError(
                    "`vllm_adapters_as_lora=True` was tested with an unquantised base only; drop the quantization or "
                    "set `vllm_adapters_as_lora=False`."
                )
            lora_config = peft_config if peft_config is not None else model.peft_config[model.active_adapter]
            engine_kwargs = check_adapter_servable(lora_config)
        # The full fine-tuning anchor (and optional reference) start as copies of the untouched policy π_ref. An
        # instance is copied before RLOO patches it with the fused LM head (the patch closes over the original).
        initial_model = copy.deepcopy(model) if not use_lora and not isinstance(model, str) else None

        with vllm_engine_kwargs(**engine_kwargs) if engine_kwargs else nullcontext():
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

        # Anchor: a second LoRA adapter (fp32 shadow) or a second full model.
        self._anchor_model = None
        if is_peft_model(self.model):
            self.anchor = LoraAnchor(self.model)
        else:
            self._anchor_model = self._load_frozen_copy(model, initial_model)
            self.anchor = ModelAnchor(self._anchor_model, self.model)
            if args.log_ref_kl:  # RLOO (beta = 0) loaded none and never reads it; `_reference_model` does
                self.ref_model = self._load_frozen_copy(model, initial_model)
        # `disable_dropout` is forced (see `JBondConfig`). RLOO switched off the policy's dropout modules, but not the
        # float attention rates some models read directly, nor the anchor adapter's `lora_dropout` (added since).
        disable_all_dropout(self.model)
        self.log_ref_kl = args.log_ref_kl if args.log_ref_kl is not None else is_peft_model(self.model)
        self.anchor_callback = AnchorCallback(self.anchor, args.anchor_schedule)
        self.add_callback(self.anchor_callback)
        self._vllm_adapters = None
        if args.vllm_adapters_as_lora:
            self._vllm_adapters = VLLMAdapters((self.anchor.policy_adapter, self.anchor.adapter_name))
        self._stashed_rewards_per_func = None
        self._generation_time = 0.0

    def _load_frozen_copy(self, model, initial_model):
        """A frozen, prepared copy of π_ref (the policy's starting weights) with the fused LM head."""
        if isinstance(model, str):
            # Same loading as RLOO's reference model.
            kwargs = dict(self.args.model_init_kwargs or {})
            if self.args.distributed_state.distributed_type in ["MULTI_GPU", "DEEPSPEED"]:
                kwargs["device_map"] = None
            kwargs.setdefault("trust_remote_code", self.args.trust_remote_code)
            kwargs.setdefault("dtype", self.model.dtype)
            frozen = create_model_from_path(model, **kwargs)
        else:
            frozen = copy.deepcopy(initial_model)
        frozen.requires_grad_(False)
        disable_all_dropout(frozen)
        add_fused_lm_head(frozen, temperature=self.temperature)
        if self.is_deepspeed_enabled:
            return prepare_deepspeed(frozen, self.accelerator)
        if self.is_fsdp_enabled:
            frozen = prepare_fsdp(frozen, self.accelerator)
            # As `Trainer` does for the policy: generate() must unshard the FSDP2 parameters first.
            torch.distributed.fsdp.register_fsdp_forward_method(frozen, "generate")
            return frozen
        return self.accelerator.prepare_model(frozen, evaluation_mode=True)

    # Checkpoints: the anchor is saved into each checkpoint before it becomes visible, and read back only from it

    def _save_resume_state(self, checkpoint_dir):
        # Every process takes part (FSDP2 and ZeRO-3 gather the anchor); the main process writes.
        self.anchor_callback.save_to_checkpoint(checkpoint_dir, self.state)

    def _load_resume_state(self, checkpoint_dir):
        self.anchor_callback.load_from_checkpoint(checkpoint_dir, self.state.global_step)

    def _save(self, output_dir=None, state_dict=None):
        """Save the policy only: with LoRA its adapter, not PEFT's `anchor/` export (the anchor is resume state)."""
        model = self.accelerator.unwrap_model(self.model)
        if not is_peft_model(model):
            return super()._save(output_dir, state_dict)
        with save_selected_adapters(model, [self.anchor.policy_adapter]):
            return super()._save(output_dir, state_dict)

    def _card_method(self) -> str:
        if self.args.mode == "jbond":
            return "J-BOND"
        return {"fixed": "BOND", "periodic": "iterative BOND"}.get(self.args.anchor, "BOND with an EMA anchor")

    def _card_settings(self) -> dict[str, object]:
        args = self.args
        settings = {
            "mode": f"`{args.mode}`",
            "N (Best-of-N)": args.num_candidates,
            "anchor samples per prompt": args.num_generations - 1,
            "anchor": f"`{args.anchor}`",
            "β (Jeffreys weight)": args.jeffreys_beta,
            "γ (anchor KL coefficient)": args.anchor_kl_coef,
        }
        if args.anchor == "ema":
            settings["η (anchor EMA rate)"] = args.anchor_ema_rate
        elif args.anchor == "periodic":
            settings["anchor update period"] = args.anchor_update_period
        return settings

    def _slots(self, num_rows: int) -> torch.Tensor:
        """Slot of each local row in its prompt group (0 = policy); `RepeatSampler` keeps groups contiguous."""
        start = self.accelerator.process_index * num_rows
        return torch.arange(start, start + num_rows) % self.num_generations

    def _one_generate_call(self) -> bool:
        """Policy and anchor rows in one `generate` call, each through its adapter (LoRA anchor, plain `generate`;
        PEFT refuses `adapter_names` with DoRA)."""
        if self._anchor_model is not None or self.use_vllm or self.use_transformers_continuous_batching:
            return False
        return not getattr(self.model.peft_config[self.anchor.policy_adapter], "use_dora", False)

    def _reads_generation_logps(self) -> bool:
        return self._one_generate_call() and super()._reads_generation_logps()

    def _rows_sampled_by_policy(self, num_rows: int) -> torch.Tensor:
        return self._slots(num_rows) == 0

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields):
        if images is not None or multimodal_fields:
            raise NotImplementedError("JBondTrainer supports text-only prompts; remove the images from the dataset.")
        start = time.perf_counter()
        # Eval mode for the policy rows too: PEFT refuses `adapter_names` in training mode, and the anchor model is
        # always in eval mode, so both are sampled from the same kind of model.
        with eval_mode(self.accelerator.unwrap_model(self.model_wrapped)):
            completion_ids = self._generate_policy_and_anchor_rows(prompt_ids)
        self._generation_time += time.perf_counter() - start
        return completion_ids

    def _generate_policy_and_anchor_rows(self, prompt_ids):
        num_generations = self.num_generations
        slots = self._slots(len(prompt_ids)).tolist()
        if self._anchor_model is None:  # LoRA: each row's adapter
            names = [self.anchor.policy_adapter if slot == 0 else self.anchor.adapter_name for slot in slots]
        if self._one_generate_call():
            # Decoding time is set by the number of sequential steps, not the batch size, so one call beats two.
            if self.anchor.routes_rows_by_views():  # slot s holds every `num_generations`-th row from its first
                routes = [
                    (name, slice(first, None, num_generations)) for first, name in enumerate(names[:num_generations])
                ]
                with self.anchor.rows_routed(routes):
                    return super()._generate_single_turn(prompt_ids, None, {})
            with generate_with_adapter_names(self.accelerator.unwrap_model(self.model_wrapped), names):
                return super()._generate_single_turn(prompt_ids, None, {})
        if self._vllm_adapters is not None:
            # vLLM serves both adapters as LoRA: once per step it gets their tensors (the base weights it loaded from
            # the model path never change under LoRA), then one generate call routes each row to its adapter.
            llm = self.vllm_generation.llm
            if self.state.global_step != self._last_loaded_step:
                self._vllm_adapters.sync(llm, self.accelerator.unwrap_model(self.model_wrapped))
                llm.reset_prefix_cache()
                self._last_loaded_step = self.state.global_step  # TRL then skips its merged full-weight sync
            with self._vllm_adapters.route(llm, names):
                return super()._generate_single_turn(prompt_ids, None, {})
        policy_rows = [i for i, slot in enumerate(slots) if slot == 0]
        anchor_rows = [i for i, slot in enumerate(slots) if slot != 0]
        with rloo_group_size(self, 1):  # vLLM server mode de-duplicates prompts by group
            policy_ids = super()._generate_single_turn([prompt_ids[i] for i in policy_rows], None, {})
        # vLLM syncs the *active* adapter only when the step changes: force a sync of the anchor adapter, then of
        # the policy at the next generation (two syncs per generation batch; not GPU-verified).
        if self.use_vllm:
            force_vllm_weight_sync(self)
        anchor_model = self.model_wrapped if self._anchor_model is None else self._anchor_model
        with (
            rloo_group_size(self, num_generations - 1),
            self.anchor.active(),
            rloo_generation_model(self, anchor_model),
        ):
            anchor_ids = super()._generate_single_turn([prompt_ids[i] for i in anchor_rows], None, {})
        if self._anchor_model is not None:
            self._anchor_model.eval()  # continuous batching sets `.train()` after generating
        if self.use_vllm:
            force_vllm_weight_sync(self)
        policy_ids, anchor_ids = iter(policy_ids), iter(anchor_ids)  # back in batch order
        return [next(policy_ids) if slot == 0 else next(anchor_ids) for slot in slots]

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        why = ": J-BOND compares each policy sample with its anchor samples by reward."
        check_finite_rewards(rewards_per_func, self.reward_func_names, why)
        # The completions table marks which rows the policy drew (RLOO's `log_extra` column, gathered by RLOO).
        self._log_completion_extra("sample", ["policy" if s == 0 else "anchor" for s in self._slots(len(prompts))])
        # RLOO returns the gathered rewards but not to `_generate_and_score_completions`: hand them over here.
        self._stashed_rewards_per_func = rewards_per_func  # (B_global, n_funcs)
        return rewards_per_func

    @property
    def _stashed_rewards(self) -> torch.Tensor:
        """`(B_global,)` weighted (and clipped) rewards of the last generation batch, as RLOO trains on them."""
        rewards = weighted_rewards(self._stashed_rewards_per_func, self.reward_weights)
        if self.reward_clip_range:
            rewards = rewards.clamp(min=self.reward_clip_range[0], max=self.reward_clip_range[1])
        return rewards

    def _sequence_logps(self, model, out, rows=None):
        """No-grad per-token log-probs of the completion tokens of all local rows or of `rows`."""
        input_ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
        attention_mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
        if rows is not None:
            input_ids, attention_mask = input_ids[rows], attention_mask[rows]
        args = self.args
        batch_size = args.per_device_train_batch_size if self.model.training else args.per_device_eval_batch_size
        with torch.no_grad(), disable_gradient_checkpointing(self.model, args.gradient_checkpointing_kwargs):
            per_token_logps, _, _ = self._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, out["completion_ids"].size(1), batch_size
            )
        return per_token_logps

    def _diagnostics_due(self) -> bool:
        """Whether the step this batch trains is logged (every step unless `logging_strategy="steps"`; the last step
        always), so the diagnostics that cost a forward are due."""
        if not self.model.training:
            return True
        args, state, step = self.args, self.state, self.state.global_step + 1  # the step this batch trains
        if args.logging_strategy != "steps" or step >= state.max_steps:
            return True
        return step % state.logging_steps == 0 or (step == 1 and args.logging_first_step)

    def _generate_and_score_completions(self, inputs):
        """RLOO's batch, with J-BOND's per-row loss weights (`core.jbond_weights`) in place of its advantages."""
        start, self._generation_time = time.perf_counter(), 0.0
        # The weights need the policy's log-probs of the policy rows only; the anchor rows' are read by the
        # `target_nll` / `objective/jeffreys` diagnostics, so they are scored on logging steps only.
        diagnostics = self._diagnostics_due()
        slots = self._slots(len(inputs)).to(self.accelerator.device)
        rows = (slots == 0).nonzero().squeeze(1)
        with self._record_scoring_forwards(None if diagnostics else rows) as forwards:
            out = super()._generate_and_score_completions(inputs)
        if not diagnostics:  # the anchor rows (the policy rows are flagged already if read while generating)
            out[OLD_LOGPS_SKIPPED] = (slots != 0) | out.get(OLD_LOGPS_SKIPPED, slots < 0)
        policy_token_logps = forwards[0]  # beta = 0: RLOO's only scoring forward is the policy's
        mask, group = out["completion_mask"], self.num_generations
        # Δ = log π − log π_a of the policy samples (slot 0), summed over their completion tokens.
        with self.anchor.active():
            anchor_model = self.model if self._anchor_model is None else self._anchor_model
            anchor_logps = (self._sequence_logps(anchor_model, out, rows) * mask[rows]).sum(1)
        gather = self.accelerator.gather
        rewards = self._stashed_rewards.view(-1, group)
        delta = gather(out["old_logps"][rows] - anchor_logps)
        lengths = gather(mask.sum(1)).view(-1, group).float()
        result = core.jbond_weights(rewards[:, 0], rewards[:, 1:], delta, lengths, self.args.objective)
        weights = result.weights.view(-1)
        first = self.accelerator.process_index * mask.size(0)
        out["advantages"] = weights[first : first + mask.size(0)].to(out["advantages"].dtype)
        # The completions table's "advantage" column: the weights trained on, not RLOO's unused advantages.
        replace_last_logged(self._logs["advantages"], weights.tolist())

        metrics = self._mode_metrics  # all gathered, identical on every rank
        self._log_policy_rewards(self._stashed_rewards_per_func[::group])
        for name, value in result.stats.items():
            metrics[f"jbond/{name}"].append(value.item())
        if diagnostics:  # single-step values on the logging step (docs/metrics.md)
            target_logps = gather(out["old_logps"]).view(-1, group).gather(1, result.target[:, None])
            metrics["jbond/target_nll"].append(-target_logps.mean().item())
            jeffreys = core.jeffreys_estimate(target_logps, result.stats["return"], self.args.jeffreys_beta)
            metrics["objective/jeffreys"].append(jeffreys.item())  # `loss` is a constant surrogate (docs/metrics.md)
            if self.log_ref_kl:
                with self._reference_model() as reference:
                    ref_logps = self._sequence_logps(reference, out, rows)
                self._log_kl_to_ref(policy_token_logps[rows], ref_logps, mask[rows])
        metrics["jbond/time/generation"].append(self._generation_time)
        metrics["jbond/time/scoring"].append(time.perf_counter() - start - self._generation_time)
        return out

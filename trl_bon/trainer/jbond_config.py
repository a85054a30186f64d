"""Configuration of the [`JBondTrainer`] (J-BOND and BOND, Sessa et al., arXiv 2407.14622 v1)."""

import math
from dataclasses import dataclass, field, fields

from trl import RLOOConfig

from ..core.ema import AnchorSchedule
from ..core.jbond import JBondOptions
from ._config_checks import BoNConfigMixin, check_dropout_disabled, require


def is_8bit(quantization_config) -> bool:
    """Whether a `BitsAndBytesConfig` (or its dict form) loads the model in 8-bit (other backends have no such key)."""
    get = dict.get if isinstance(quantization_config, dict) else getattr
    return bool(get(quantization_config, "load_in_8bit", False))


def vllm_8bit_error() -> ValueError:
    return ValueError(
        "vLLM does not support in-flight 8-bit (bitsandbytes `load_in_8bit`) quantization. Load the base in 4-bit "
        "(`BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4')`) or generate with transformers "
        "(`use_vllm=False`, optionally `use_transformers_continuous_batching=True`)."
    )


@dataclass
class JBondConfig(BoNConfigMixin, RLOOConfig):
    r"""
    Configuration class for the [`JBondTrainer`]. Only J-BOND/BOND-specific parameters are listed; see [`RLOOConfig`]
    and [`~transformers.TrainingArguments`] for the rest, and docs/jbond_trainer.md for each parameter's effect.

    Each prompt gets one group of `num_generations` completions: slot 0 is sampled from the policy π, slots 1..k from
    the anchor π_a (k = 2 in J-BOND, k = `num_quantile_samples` in BOND).

    > [!NOTE]
    > Defaults that differ from [`RLOOConfig`] (docs/jbond_trainer.md says why): `beta=0.0` (must stay 0: J-BOND
    > regularises towards the anchor), `num_generations` derived (`1 + 2`, or `1 + num_quantile_samples` in BOND),
    > `per_device_train_batch_size=2 * num_generations` (whole groups per device), `disable_dropout=True` (must stay).

    Parameters:
        > Parameters that control the objective

        mode (`str`, *optional*, defaults to `"jbond"`):
            `"jbond"`: J-BOND (BOND arXiv v1 §5, Alg. 2), Best-of-2 of a moving anchor with the crude reward r_J.
            `"bond"`: BOND (§4, eq. 15), Best-of-`num_candidates` with the log-quantile reward `(N−1)·log p̂≤`.
        jeffreys_beta (`float`, *optional*, defaults to `0.5`):
            Jeffreys weight β ∈ [0, 1] (eq. 11): 0 is the forward KL (online BoN-SFT), 1 the backward KL.
        anchor_kl_coef (`float`, *optional*, defaults to `0.0`):
            γ ≥ 0 of eq. 19, the weight of a term that lowers KL(π‖π_a) (docs/maths.md §3).
        jbond_penalty (`float`, *optional*, defaults to `log(16)`):
            Penalty of the crude J-BOND reward (eq. 17) when the policy sample is worse than both anchor samples.
        jbond_ties (`str`, *optional*, defaults to `"strict"`):
            `"strict"` (eq. 17: a tie earns 0) or `"half"` (a tie is half a loss); set `"half"` for 0/1 rewards.
        baseline (`str`, *optional*, defaults to `"batch_loo"`):
            `"batch_loo"` (mean return of the other prompts of the generation batch, Alg. 2) or `"none"`.
        loss_normalization (`str`, *optional*, defaults to `"sequence_sum"`):
            `"sequence_sum"` (the paper) or `"token_mean"` (each weight divided by its completion length; opt-in).

        > Parameters that control BOND (`mode="bond"`)

        num_candidates (`int`, *optional*):
            N of Best-of-N, required in BOND mode (N ≥ 2). J-BOND fixes it to 2 (leave unset or set 2).
        num_quantile_samples (`int`, *optional*, defaults to `16`):
            k ≥ N anchor samples per prompt for the quantile p̂≤ (eq. 10); the target is the best of the first N.
        quantile_smoothing (`str`, *optional*, defaults to `"clamp"`):
            p̂≤ when the policy sample is below all k: `"clamp"` → max(p̂≤, 1/(2k)), `"add_one"` → (c + 1)/(k + 1).
        include_tie_correction (`bool`, *optional*, defaults to `False`):
            Add log B̂ (eq. 4) to the BOND reward; set it for 0/1 and other discrete rewards.

        > Parameters that control the anchor

        anchor (`str`, *optional*):
            `"ema"` (eq. 18), `"periodic"` (hard copy every `anchor_update_period` optimizer steps, iterative BOND) or
            `"fixed"` (π_ref). Defaults to `"ema"` in J-BOND mode and `"fixed"` in BOND mode.
        anchor_ema_rate (`float`, *optional*, defaults to `0.02`):
            EMA rate η ∈ [0, 1]; 0 freezes the anchor, 1 copies the policy.
        anchor_update_period (`int`, *optional*, defaults to `1000`):
            Optimizer steps between hard copies when `anchor="periodic"`.

        > Parameters that control vLLM

        vllm_adapters_as_lora (`bool`, *optional*, defaults to `False`):
            LoRA with colocated vLLM under DDP: serve the policy and anchor adapters as vLLM LoRA adapters, syncing
            the adapters instead of merged weights (docs/engines.md).

        > Parameters that control logging

        log_ref_kl (`bool`, *optional*):
            Log KL(π‖π_ref) as `kl_k1` and `kl_k3`. `None`: on for LoRA (one extra forward), off for full fine-tuning,
            where `True` loads a frozen copy of π_ref (docs/metrics.md).

    Built once from the fields, and checked there: `objective` ([`~trl_bon.core.JBondOptions`]), `anchor_schedule`
    ([`~trl_bon.core.AnchorSchedule`]) and `generation_settings` ([`~trl_bon.sampling.GenerationSettings`]).
    """

    # Parameters whose default values are overridden from RLOOConfig / TrainingArguments
    beta: float = field(default=0.0, metadata={"help": "Must stay 0.0: J-BOND regularises towards the anchor."})
    num_generations: int | None = field(default=None, metadata={"help": "Derived: 1 + anchor samples. Leave unset."})
    per_device_train_batch_size: int | None = field(
        default=None, metadata={"help": "Completions (policy and anchor) per device: whole groups of num_generations."}
    )
    disable_dropout: bool = field(default=True, metadata={"help": "Must stay True (dropout breaks the ratio of 1)."})

    # Parameters that control the objective
    mode: str = field(default="jbond", metadata={"help": "`jbond` (J-BOND, Alg. 2) or `bond` (BOND, eq. 15)."})
    jeffreys_beta: float = field(
        default=0.5, metadata={"help": "Jeffreys weight in [0, 1]: 0 = forward KL, 1 = backward KL (eq. 11)."}
    )
    anchor_kl_coef: float = field(default=0.0, metadata={"help": "γ >= 0: weight of the KL(π‖anchor) term (eq. 19)."})
    jbond_penalty: float = field(
        default=math.log(16.0), metadata={"help": "Penalty of the J-BOND crude reward (eq. 17)."}
    )
    jbond_ties: str = field(
        default="strict", metadata={"help": "Ties in the crude reward: `strict` (eq. 17) or `half` (for 0/1 rewards)."}
    )
    baseline: str = field(default="batch_loo", metadata={"help": "`batch_loo` (batch leave-one-out) or `none`."})
    loss_normalization: str = field(
        default="sequence_sum", metadata={"help": "`sequence_sum` (paper) or `token_mean` (per completion length)."}
    )

    # Parameters that control BOND
    num_candidates: int | None = field(default=None, metadata={"help": "N; required in BOND mode, 2 in J-BOND."})
    num_quantile_samples: int = field(default=16, metadata={"help": "BOND: anchor samples per prompt (k >= N)."})
    quantile_smoothing: str = field(
        default="clamp", metadata={"help": "BOND: `clamp` or `add_one`, when the quantile estimate is 0."}
    )
    include_tie_correction: bool = field(
        default=False, metadata={"help": "BOND: add the tie correction log B̂ (eq. 4); set it for 0/1 rewards."}
    )

    # Parameters that control the anchor
    anchor: str | None = field(
        default=None, metadata={"help": "`ema`, `periodic` or `fixed`; default `ema` (J-BOND), `fixed` (BOND)."}
    )
    anchor_ema_rate: float = field(default=0.02, metadata={"help": "EMA rate η in [0, 1] of the anchor (eq. 18)."})
    anchor_update_period: int = field(default=1000, metadata={"help": "Optimizer steps between periodic copies."})

    # Parameters that control vLLM
    vllm_adapters_as_lora: bool = field(
        default=False, metadata={"help": "LoRA, colocated vLLM: serve policy and anchor adapters as vLLM LoRA."}
    )

    # Parameters that control logging
    log_ref_kl: bool | None = field(
        default=None, metadata={"help": "Log KL(π‖π_ref); default: on for LoRA, off for full fine-tuning."}
    )

    def __post_init__(self):
        # `num_generations` must be known before RLOOConfig validates the batch layout against it.
        self.objective = JBondOptions(**{f.name: getattr(self, f.name) for f in fields(JBondOptions)})
        self.num_candidates = self.objective.num_candidates
        num_anchor_samples = self.num_quantile_samples if self.mode == "bond" else 2
        if num_anchor_samples < self.num_candidates:
            raise ValueError(
                f"The Best-of-N target is drawn from the first N of the `num_quantile_samples` anchor samples, so "
                f"`num_quantile_samples` ({self.num_quantile_samples}) must be >= `num_candidates` "
                f"({self.num_candidates}). Raise `num_quantile_samples` or lower `num_candidates`."
            )
        group = 1 + num_anchor_samples
        if self.num_generations not in (None, group):
            raise ValueError(
                f"`num_generations` is derived in {self.mode} mode: 1 policy + {num_anchor_samples} anchor samples = "
                f"{group} per prompt, but it was set to {self.num_generations}. Leave `num_generations` unset"
                + (" and set `num_quantile_samples` instead." if self.mode == "bond" else ".")
            )
        self.num_generations = group
        if self.per_device_train_batch_size is None:
            self.per_device_train_batch_size = 2 * group
        if self.anchor is None:
            self.anchor = "ema" if self.mode == "jbond" else "fixed"
        # Every device must hold whole prompt groups (a row's slot is its position in its group; vLLM server mode
        # returns equal per-rank chunks). Checked before RLOOConfig's global check, so the message names this fix.
        per_device = self.per_device_train_batch_size
        steps = self.steps_per_generation or self.gradient_accumulation_steps
        if per_device * steps % group:
            below = max(group, per_device // group * group)
            valid = sorted({below, below + group, 2 * group})
            raise ValueError(
                f"`per_device_train_batch_size` counts completions, policy and anchor together: each prompt takes "
                f"{group} (1 policy + {group - 1} anchor samples), so each device must hold whole groups of {group}. "
                f"Here `per_device_train_batch_size` * `steps_per_generation` = {per_device} * {steps} = "
                f"{per_device * steps}, not a multiple of {group}. Set `per_device_train_batch_size` to a multiple of "
                f"{group}, e.g. {', '.join(map(str, valid))} ({', '.join(str(v // group) for v in valid)} prompts per "
                "device per step)."
            )

        super().__post_init__()
        check_dropout_disabled(self)
        require(
            self,
            "beta",
            0.0,
            "RLOO's KL coefficient towards a reference model is not used by J-BOND/BOND: the policy is regularised "
            "towards the anchor by the −Δ term of the return and by `anchor_kl_coef`",
            " (and `log_ref_kl=True` to monitor KL(π‖π_ref))",
        )
        self.anchor_schedule = AnchorSchedule(self.anchor, self.anchor_ema_rate, self.anchor_update_period)
        # The loss reuses RLOO's clipped ratio loss at ratio 1, where it is exactly −mean(w·log π). Several policy
        # updates per generation would move the ratio away from 1, and the clip would then also cap the SFT weights.
        require(self, "num_iterations", 1, "J-BOND's per-sequence weights assume one policy update per generation")
        if self.steps_per_generation != self.gradient_accumulation_steps:
            raise ValueError(
                f"`steps_per_generation` ({self.steps_per_generation}) differs from `gradient_accumulation_steps` "
                f"({self.gradient_accumulation_steps}), so one generation batch would feed several optimizer steps "
                "and the importance ratio would drift from 1. Leave `steps_per_generation` and "
                "`generation_batch_size` unset (they then follow `gradient_accumulation_steps`)."
            )
        require(self, "normalize_advantages", False, "it would rescale J-BOND's loss weights and change the objective")
        fix = " and use `anchor='ema'` with `anchor_ema_rate` instead"
        require(self, "sync_ref_model", False, "it updates RLOO's reference model, which J-BOND does not use", fix)
        num_prompts = self.generation_batch_size // self.num_generations
        if self.baseline == "batch_loo" and num_prompts < 2:
            raise ValueError(
                f"The batch leave-one-out baseline needs at least 2 prompts per generation batch, got {num_prompts}. "
                f"Set `per_device_train_batch_size` to at least {2 * self.num_generations} or `baseline='none'`."
            )
        if self.num_generations_eval not in (None, self.num_generations):
            raise ValueError(
                f"Evaluation uses the same slot layout as training, so `num_generations_eval` must be unset or "
                f"{self.num_generations} (got {self.num_generations_eval}). Leave it unset."
            )
        if self.do_eval and self.eval_strategy != "no" and self.per_device_eval_batch_size % self.num_generations:
            raise ValueError(
                f"`per_device_eval_batch_size` ({self.per_device_eval_batch_size}) must be a multiple of "
                f"`num_generations` ({self.num_generations}) so that each device holds whole prompt groups."
            )
        if self.use_vllm and is_8bit((self.model_init_kwargs or {}).get("quantization_config")):
            raise vllm_8bit_error()
        colocated_ddp = self.use_vllm and self.vllm_mode == "colocate" and not (self.deepspeed or self.fsdp)
        if self.vllm_adapters_as_lora and not (
            colocated_ddp and self.vllm_tensor_parallel_size == 1 and not self.vllm_enable_sleep_mode
        ):
            raise ValueError(
                "`vllm_adapters_as_lora=True` serves the adapters from the colocated vLLM engine; it is implemented "
                "for `vllm_tensor_parallel_size=1` without `vllm_enable_sleep_mode` and tested under DDP only "
                "(DeepSpeed/FSDP partition the adapter tensors it reads). Under DDP, set `use_vllm=True, "
                "vllm_mode='colocate'` with those, or `vllm_adapters_as_lora=False`."
            )

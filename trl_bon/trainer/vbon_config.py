"""Configuration of the [`VBoNTrainer`] (variational Best-of-N, Amini et al., arXiv 2407.06057)."""

import warnings
from dataclasses import dataclass, field

from trl import RLOOConfig

from ._config_checks import BoNConfigMixin, check_dropout_disabled, require, require_at_least, require_one_of


@dataclass
class VBoNConfig(BoNConfigMixin, RLOOConfig):
    r"""
    Configuration class for the [`VBoNTrainer`]. Only vBoN-specific parameters are listed; see [`RLOOConfig`] and
    [`~transformers.TrainingArguments`] for the rest.

    vBoN fine-tunes π to minimise KL(π‖π_BoN), the reverse KL to the Best-of-N distribution of the reference
    policy. Divided by N−1 this is KL-regularised RL with KL coefficient 1/(N−1), run here with RLOO (leave-one-out
    baseline over `num_generations` completions per prompt, sequence-level KL in the reward).

    > [!NOTE]
    > Defaults that differ from [`RLOOConfig`] (docs/vbon_trainer.md says why): `beta=None`, resolved to vBoN's
    > `1/(num_candidates − 1)` (another value warns), and `disable_dropout=True` (must stay).
    > `normalize_advantages=True` and `remove_unused_columns=True` are rejected.

    Parameters:
        > Parameters that control the objective

        num_candidates (`int`):
            N ≥ 2 of the Best-of-N being distilled; required. `beta` follows as 1/(N−1).
        vbon_objective (`str`, *optional*, defaults to `"l1"`):
            `"l1"`: reward log F̂(r(y)), vBoN's l1 bound (the paper's main objective). `"exact"`: reward
            (log π_BoN(y) − log π_ref(y))/(N−1), optimum π_BoN; one extra reference forward per generation batch.
        reproduce_vbon_code_scaling (`bool`, *optional*, defaults to `False`):
            With `"exact"`, use the official rycolab/vbon code's score (its optimum is not π_BoN; reproduction only).

        > Parameters that control the reference-reward cache

        reference_rewards_column (`str`, *optional*, defaults to `"ref_rewards"`):
            Dataset column with each prompt's cached reference rewards (a list of floats); when missing, the trainer
            joins `reference_cache_dir` or raises an error naming `trl-bon cache-ref-rewards`.
        prompt_id_column (`str`, *optional*):
            Column of prompt ids to join the cache on; `None` hashes the prompt (`trl_bon.ref_cache.prompt_id`).
        reference_cache_dir (`str`, *optional*):
            Cache written by `trl-bon cache-ref-rewards`, joined at init (`None`: `<output_dir>/_reference_rewards`).
            Its generation settings, reward signature and π_ref must match this run's.
        num_reference_samples (`int`, *optional*, defaults to `300`):
            M, reference completions per prompt that `trl-bon cache-ref-rewards` samples (the trainer ignores it).
        reference_cache_batch_size (`int`, *optional*, defaults to `64`):
            Sequences per `generate` call of `trl-bon cache-ref-rewards` (the trainer ignores it).

    The sampling settings are checked once, by `generation_settings` ([`~trl_bon.sampling.GenerationSettings`]).
    """

    # Parameters whose default values are overridden from RLOOConfig
    beta: float | None = field(
        default=None, metadata={"help": "KL coefficient; `None`: vBoN's 1/(num_candidates - 1) (another value warns)."}
    )
    disable_dropout: bool = field(default=True, metadata={"help": "Must stay True (dropout breaks the ratio of 1)."})

    # Parameters that control the objective
    num_candidates: int | None = field(
        default=None, metadata={"help": "N of the Best-of-N to distil (>= 2); required."}
    )
    vbon_objective: str = field(
        default="l1", metadata={"help": "`l1` (vBoN's bound, reward log F-hat) or `exact` (log(pi_BoN/pi_ref)/(N-1))."}
    )
    reproduce_vbon_code_scaling: bool = field(
        default=False, metadata={"help": "`exact` scaled as the official vBoN code (reproduction only)."}
    )

    # Parameters that control the reference-reward cache
    reference_rewards_column: str = field(
        default="ref_rewards", metadata={"help": "Dataset column of each prompt's cached reference rewards."}
    )
    prompt_id_column: str | None = field(
        default=None, metadata={"help": "Dataset column of prompt ids for the cache join; `None` hashes the prompt."}
    )
    reference_cache_dir: str | None = field(
        default=None, metadata={"help": "Cache to join at init (default <output_dir>/_reference_rewards)."}
    )
    num_reference_samples: int = field(
        default=300, metadata={"help": "M, completions per prompt sampled by `trl-bon cache-ref-rewards`."}
    )
    reference_cache_batch_size: int = field(
        default=64, metadata={"help": "Sequences per generate call of `trl-bon cache-ref-rewards`."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.beta is not None and self.beta < 0:  # it would reward moving away from the reference policy
            raise ValueError(
                f"`beta` must be >= 0, got {self.beta}: a negative KL coefficient rewards moving away from the "
                "reference policy. Leave `beta` unset to use vBoN's 1/(num_candidates − 1)."
            )
        check_dropout_disabled(self)
        require_at_least(self, "num_candidates", 2, " (N of the Best-of-N vBoN distils, e.g. `--num_candidates 4`)")
        kl_coef = 1.0 / (self.num_candidates - 1)
        if self.beta is None:
            self.beta = kl_coef
        elif abs(self.beta - kl_coef) > 1e-12:
            warnings.warn(
                f"`beta={self.beta}` differs from vBoN's KL coefficient 1/(N-1) = {kl_coef:.6g} for "
                f"num_candidates={self.num_candidates}: training will not target pi_BoN. Leave `beta` unset to use "
                "vBoN's value.",
                stacklevel=3,
            )
        require_one_of(self, "vbon_objective", ("l1", "exact"))
        if self.reproduce_vbon_code_scaling and self.vbon_objective != "exact":
            raise ValueError(
                "`reproduce_vbon_code_scaling=True` changes the scaling of the exact score only; set "
                "`vbon_objective='exact'` or leave `reproduce_vbon_code_scaling=False`."
            )
        if self.vbon_objective == "exact" and self.beta == 0.0:
            raise ValueError(
                "`vbon_objective='exact'` needs the reference model, which `beta=0.0` skips; leave `beta` unset "
                "(1/(N-1))."
            )
        require(self, "normalize_advantages", False, "it rescales the vBoN reward against its KL term")
        require(self, "remove_unused_columns", False, f"it drops the reward column {self.reference_rewards_column!r}")
        require_at_least(self, "num_reference_samples", 1, " (M reference samples per prompt; vBoN uses ~300)")

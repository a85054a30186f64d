"""Configuration of the [`BoNSFTTrainer`] (Best-of-N distillation by SFT) and of the `best_of_n` call feeding it."""

from dataclasses import dataclass, field
from typing import Any

from trl import SFTConfig

from ._config_checks import BoNConfigMixin, require_at_least, require_one_of


@dataclass
class BoNSFTConfig(BoNConfigMixin, SFTConfig):
    r"""
    Configuration class for the [`BoNSFTTrainer`]. Only Best-of-N parameters are listed; see [`SFTConfig`] and
    [`~transformers.TrainingArguments`] for the rest. The trainer itself only trains: the Best-of-N and sampling
    parameters describe the [`~trl_bon.best_of_n`] call that makes its data (`trl-bon bon-sft` makes it from them),
    and the trainer checks that the data's N equals `num_candidates`.

    > [!NOTE]
    > `completion_only_loss` defaults to `True` here (loss on the sampled completion tokens only, EOS included), not
    > `None` as in [`SFTConfig`]. Set it to `False` to put the prompt in the loss, as the official vBoN baseline does.

    Parameters:
        > Parameters that control the Best-of-N data

        num_candidates (`int`, *optional*, defaults to `4`):
            N, the completions sampled per prompt; the one with the highest reward is the SFT target.
        tie_break (`str`, *optional*, defaults to `"random"`):
            Among maximal candidates: `"random"` (uniform, seeded: the law of Best-of-N sampling) or `"first"`.
        reward_weights (`list[float]`, *optional*):
            Weight of each reward function in the scalar reward used for selection; all `1.0` when `None`.

        > Parameters that control the sampling of the candidates

        max_completion_length (`int`, *optional*, defaults to `256`):
            Maximum number of tokens per sampled completion.
        temperature (`float`, *optional*, defaults to `1.0`):
            Sampling temperature, which defines the reference model Best-of-N is relative to.
        top_p (`float`, *optional*, defaults to `1.0`):
            Nucleus sampling threshold.
        top_k (`int`, *optional*, defaults to `0`):
            Top-k sampling; `0` disables it.
        min_p (`float`, *optional*):
            Minimum token probability, scaled by the most likely token's probability.
        repetition_penalty (`float`, *optional*, defaults to `1.0`):
            Repetition penalty; `1.0` disables it.
        generation_batch_size (`int`, *optional*, defaults to `64`):
            Sequences per `generate` call of the sampler that builds the data (not a training batch, unlike RLOO's).
        use_vllm (`bool`, *optional*, defaults to `False`):
            Sample the candidates with an offline vLLM engine built from the model path (needs vLLM and a GPU).
        vllm_kwargs (`dict[str, Any]`, *optional*):
            Extra keyword arguments for `vllm.LLM`, e.g. `{"gpu_memory_utilization": 0.5}`.

    The sampling settings are checked once, by `generation_settings` ([`~trl_bon.sampling.GenerationSettings`]).
    """

    _VALID_DICT_FIELDS = SFTConfig._VALID_DICT_FIELDS + ["vllm_kwargs"]

    # Parameters that control the Best-of-N data
    num_candidates: int = field(default=4, metadata={"help": "N: completions sampled per prompt; the best is kept."})
    tie_break: str = field(
        default="random", metadata={"help": "Tie-break among maximal candidates: 'random' (seeded) or 'first'."}
    )
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "Weight of each reward function in the selection reward; all 1.0 if None."}
    )

    # Parameters that control the sampling of the candidates
    max_completion_length: int = field(default=256, metadata={"help": "Maximum tokens per sampled completion."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the candidates."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling; 0 disables it."})
    min_p: float | None = field(default=None, metadata={"help": "Minimum token probability, relative to the top."})
    repetition_penalty: float = field(default=1.0, metadata={"help": "Repetition penalty; 1.0 disables it."})
    generation_batch_size: int = field(
        default=64, metadata={"help": "Sequences per generate call of the sampler (not a training batch)."}
    )
    use_vllm: bool = field(default=False, metadata={"help": "Sample the candidates with an offline vLLM engine."})
    vllm_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Extra keyword arguments for `vllm.LLM` (JSON string on the CLI)."}
    )

    # Changed parent default
    completion_only_loss: bool | None = field(
        default=True, metadata={"help": "Loss on the completion tokens only; False also trains on the prompt."}
    )

    def __post_init__(self):
        super().__post_init__()
        require_at_least(self, "num_candidates", 1, " (N = 1 is plain SFT on reference samples)")
        require_one_of(self, "tie_break", ("random", "first"))
        require_at_least(self, "generation_batch_size", 1)
        if self.completion_only_loss is None:
            raise ValueError(
                "BoN-SFT always builds a prompt-completion dataset; set `completion_only_loss=True` (loss on the "
                "completions) or `False` (prompt included)."
            )

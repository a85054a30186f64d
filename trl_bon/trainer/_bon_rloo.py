"""`BoNRLOOTrainer`: what `JBondTrainer` and `VBoNTrainer` share on top of TRL's `RLOOTrainer`."""

from contextlib import contextmanager

from peft import PeftModel
from trl import RLOOTrainer

from .._trl_compat import use_adapter
from ..quantization import keep_4bit_weights_trainable
from ..rewards import check_reward_funcs, check_reward_tokenizers
from ._checkpoint import CheckpointMixin
from ._config_checks import RewardOutputChecksMixin, check_model_inputs, check_train_prompt_lengths
from ._metric_vocabulary import EffectiveNLogMixin
from ._model_card import BoNModelCardMixin
from ._scoring_forwards import ScoringForwardsMixin


class BoNRLOOTrainer(
    EffectiveNLogMixin, BoNModelCardMixin, CheckpointMixin, RewardOutputChecksMixin, ScoringForwardsMixin, RLOOTrainer
):
    """`RLOOTrainer` with the mixins both RLOO-based trainers stack on it (effective-N meters, model card,
    transactional checkpoints, checked reward outputs, exact and recorded scoring forwards), the checks that bracket
    RLOO's construction, and π_ref.

    A subclass runs its own cheap checks (and `_init_checkpointing`) first, then calls `super().__init__` with RLOO's
    arguments.
    """

    def __init__(
        self,
        model,
        reward_funcs,
        args,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        reward_processing_classes=None,
        callbacks=None,
        optimizers=(None, None),
        quantization_config=None,
        peft_config=None,
    ):
        check_model_inputs(model)  # last before any model loads: the cheaper checks speak first
        check_reward_funcs(reward_funcs, args.model_init_kwargs)  # a causal LM as reward model: before it loads
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
        keep_4bit_weights_trainable(self.model)
        check_reward_tokenizers(self.reward_funcs, self.reward_processing_classes, reward_processing_classes)
        check_train_prompt_lengths(self)

    @property
    def _frozen_reference(self):
        """A frozen copy of π_ref, or `None` (RLOO's `ref_model`, which it loads only when `beta != 0`)."""
        return self.ref_model

    @contextmanager
    def _reference_model(self):
        """Yield the model to run as π_ref: the frozen copy, else the policy with its adapter disabled (as in RLOO: a
        fresh adapter's reference is the base model, a pretrained adapter's its "ref" copy), else the policy itself
        (not PEFT and no copy: only before the first update is it π_ref)."""
        if self._frozen_reference is not None:
            yield self._frozen_reference
            return
        unwrapped = self.accelerator.unwrap_model(self.model)
        if not isinstance(unwrapped, PeftModel):
            yield self.model
            return
        with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
            yield self.model

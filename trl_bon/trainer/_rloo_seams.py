"""Every place the trainers steer TRL's `RLOOTrainer` by rewriting its state, each under a name.

RLOO has hooks for what it computes but none for how it generates, which reward functions it calls, or what it logs,
so the trainers rewrite a few of its attributes for the length of one call. Each rewrite lives here: a context
manager that restores what it changed (also on an exception), or, for the rewrites that are meant to last, a function
that says what it overwrites. The RLOO attributes they touch are listed in `_trl_compat.RLOO_STATE_ATTRIBUTES`, and
`tests/contract/test_rloo_contract.py` pins that RLOO still has them and reads them where these seams rely on it.
"""

from contextlib import contextmanager

import torch


# ---------------------------------------------------------------------------------------------------------------------
# Temporary rewrites (restored on exit)


@contextmanager
def rloo_group_size(trainer, size: int):
    """RLOO sees prompt groups of `size` completions (`num_generations`, `num_generations_eval`): vLLM server mode
    de-duplicates prompts by group, so J-BOND's policy rows (1 per prompt) and anchor rows (k) are generated apart."""
    saved = trainer.num_generations, trainer.num_generations_eval
    trainer.num_generations = trainer.num_generations_eval = size
    try:
        yield
    finally:
        trainer.num_generations, trainer.num_generations_eval = saved


@contextmanager
def rloo_generation_model(trainer, model):
    """RLOO generates with `model` in place of the policy (`model_wrapped`, which `_generate_single_turn` reads)."""
    saved, trainer.model_wrapped = trainer.model_wrapped, model
    try:
        yield
    finally:
        trainer.model_wrapped = saved


@contextmanager
def rloo_reward_funcs(trainer, reward_funcs: list):
    """RLOO's `_calculate_rewards` calls `reward_funcs` (same order, same names) in place of `trainer.reward_funcs`."""
    saved, trainer.reward_funcs = trainer.reward_funcs, reward_funcs
    try:
        yield
    finally:
        trainer.reward_funcs = saved


@contextmanager
def trainer_name(trainer, name: str):
    """TRL's `create_model_card` names the method `name` (its class attribute `_name`) for one call."""
    saved, trainer._name = trainer._name, name
    try:
        yield
    finally:
        trainer._name = saved


@contextmanager
def generate_with_adapter_names(model, adapter_names: list[str]):
    """`model.generate` (a `PeftModel`, which RLOO's `_generate_single_turn` calls) routes row i through the LoRA
    adapter `adapter_names[i]` (PEFT's mixed-adapter batches), by shadowing it on the instance for the call."""
    class_generate = model.generate
    instance_generate = vars(model).get("generate")  # FSDP2 registers an unsharding `generate` on the instance

    def generate(*args, **kwargs):
        return class_generate(*args, adapter_names=adapter_names, **kwargs)

    model.generate = generate
    try:
        yield
    finally:
        del model.generate
        if instance_generate is not None:
            model.generate = instance_generate


@contextmanager
def save_selected_adapters(model, adapter_names: list[str]):
    """`model.save_pretrained` (a `PeftModel`, which `Trainer._save` calls) writes only `adapter_names`."""
    class_save = model.save_pretrained

    def save_pretrained(*args, **kwargs):
        return class_save(*args, selected_adapters=adapter_names, **kwargs)

    model.save_pretrained = save_pretrained
    try:
        yield
    finally:
        del model.save_pretrained


@contextmanager
def generation_eval_mode(model):
    """`model` in eval mode for one generation, its mode restored after (continuous batching sets `.train()`)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------------------------------------------------
# Lasting rewrites


def force_vllm_weight_sync(trainer) -> None:
    """Make RLOO sync weights to vLLM at its next generation (`_last_loaded_step`: it syncs once per step, but J-BOND
    swaps the active adapter between the policy and the anchor calls of one step)."""
    trainer._last_loaded_step = -1


def replace_last_logged(logged, values: list) -> None:
    """Replace the last `len(values)` entries RLOO appended to one of its `_logs` columns (a bounded deque) with
    `values` (as many as the column still holds), e.g. the completions table's `advantage` column with J-BOND's
    weights, or its `rewards` columns with vBoN's raw rewards."""
    for offset in range(1, min(len(logged), len(values)) + 1):
        logged[-offset] = values[-offset]


def replace_last_metric(metrics: dict, name: str, value: float | torch.Tensor) -> None:
    """Replace the value RLOO has just appended to `metrics[name]` (`_metrics[mode]`) for this batch."""
    metrics[name][-1] = value.item() if isinstance(value, torch.Tensor) else value

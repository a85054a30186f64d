"""Every place the trainers steer TRL's `RLOOTrainer` by rewriting its state, each under a name.

RLOO has no hooks for how it generates, which reward functions it calls, or what it logs, so the trainers rewrite a few
of its attributes: for one call, by a context manager that restores them (also on an exception), or for good, by a
function that says what it overwrites. `tests/contract/test_rloo_contract.py` pins that RLOO still has and reads the
attributes these seams touch (`_trl_compat.RLOO_STATE_ATTRIBUTES`).
"""

from contextlib import contextmanager

import torch


@contextmanager
def _swapped(owner, **values):
    saved = {name: getattr(owner, name) for name in values}
    for name, value in values.items():
        setattr(owner, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(owner, name, value)


def rloo_group_size(trainer, size: int):
    """RLOO sees prompt groups of `size` completions (`num_generations`, `num_generations_eval`): vLLM server mode
    de-duplicates prompts by group, so J-BOND's policy rows (1 per prompt) and anchor rows (k) are generated apart."""
    return _swapped(trainer, num_generations=size, num_generations_eval=size)


def rloo_generation_model(trainer, model):
    """RLOO generates with `model` in place of the policy (`model_wrapped`, which `_generate_single_turn` reads)."""
    return _swapped(trainer, model_wrapped=model)


def rloo_reward_funcs(trainer, reward_funcs: list):
    """RLOO's `_calculate_rewards` calls `reward_funcs` (same order, same names) in place of `trainer.reward_funcs`."""
    return _swapped(trainer, reward_funcs=reward_funcs)


def trainer_name(trainer, name: str):
    """TRL's `create_model_card` names the method `name` (its class attribute `_name`) for one call."""
    return _swapped(trainer, _name=name)


@contextmanager
def _called_with(model, method: str, **extra):
    """`model.<method>` receives the keyword arguments `extra` on every call, by a shadow on the instance; one already
    there (FSDP2 registers an unsharding `generate` on the instance) is called through and put back after."""
    bound = getattr(model, method)
    own = vars(model).get(method)
    setattr(model, method, lambda *args, **kwargs: bound(*args, **extra, **kwargs))
    try:
        yield
    finally:
        delattr(model, method)
        if own is not None:
            setattr(model, method, own)


def generate_with_adapter_names(model, adapter_names: list[str]):
    """`model.generate` (a `PeftModel`) routes row i through the LoRA adapter `adapter_names[i]`."""
    return _called_with(model, "generate", adapter_names=adapter_names)


def save_selected_adapters(model, adapter_names: list[str]):
    """`model.save_pretrained` (a `PeftModel`, which `Trainer._save` calls) writes only `adapter_names`."""
    return _called_with(model, "save_pretrained", selected_adapters=adapter_names)


def force_vllm_weight_sync(trainer) -> None:
    """Make RLOO sync weights to vLLM at its next generation, though the step (`_last_loaded_step`) is the same."""
    trainer._last_loaded_step = -1


def replace_last_logged(logged, values: list) -> None:
    """Replace the last `len(values)` entries RLOO appended to one of its `_logs` columns (a bounded deque) with
    `values`, as many as the column holds."""
    for offset in range(1, min(len(logged), len(values)) + 1):
        logged[-offset] = values[-offset]


def replace_last_metric(metrics: dict, name: str, value: torch.Tensor) -> None:
    """Replace the value RLOO has just appended to `metrics[name]` (`_metrics[mode]`) for this batch."""
    metrics[name][-1] = value.item()

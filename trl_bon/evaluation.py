"""Evaluate Best-of-N distillation checkpoints against π_ref and Best-of-N (docs/evaluation.md, docs/maths.md §7)."""

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .core.effective_n import effective_n_from_kl, effective_n_from_win_rate
from .core.metrics import (
    backward_kl_to_bon,
    bon_kl_bound,
    forward_kl_to_bon,
    kl_k1,
    kl_k3,
    log_bon_ratio,
    mean_and_sem,
    win_rate,
)
from .core.quantiles import SMOOTHINGS, empirical_quantile
from .identity import check_model_path, check_safetensors
from .sampling import Sampler, check_prompts, prompts_and_columns, score_samples, select_best


@dataclass
class EvaluationResults:
    """What [`evaluate_checkpoints`] returns and writes to `results.json`: one metrics dict per checkpoint, per
    Best-of-N point and for π_ref (keys in docs/evaluation.md), the settings, and the files written."""

    checkpoints: list[dict]
    bon: list[dict]
    reference: dict
    settings: dict
    files: dict = field(default_factory=dict)


@dataclass
class EvalOptions:
    """What [`evaluate_checkpoints`] measures and writes (the sampling itself is set by the reference [`Sampler`]);
    nothing is written without `output_dir`.

    Args:
        bon_ns (`tuple[int]`, *optional*, defaults to `(2, 4, 8, 16)`):
            The N (≥ 2) of the Best-of-N reference points and of the KL-to-π_BoN / win-rate-vs-BoN metrics.
        num_reference_samples (`int`, *optional*, defaults to `32`):
            M reference samples per prompt (BOND evaluates with 32); must exceed `max(bon_ns)`.
        quantile_smoothing (`str`, *optional*, defaults to `"clamp"`):
            Smoothing of p̂≤ when a sample is below every reference sample (see `core.empirical_quantile`).
        kl_metric (`str`, *optional*, defaults to `"kl_k1"`):
            Checkpoint KL on the plots' x axis (`"kl_k1"` or `"kl_k3"`).
    """

    bon_ns: Sequence[int] = (2, 4, 8, 16)
    num_reference_samples: int = 32
    num_policy_samples: int = 1
    quantile_smoothing: str = "clamp"
    kl_metric: str = "kl_k1"
    output_dir: str | Path | None = None
    plot: bool = True

    def __post_init__(self):
        self.bon_ns = sorted(set(int(n) for n in self.bon_ns))
        if self.bon_ns and self.bon_ns[0] < 2:
            raise ValueError(f"Best-of-N needs N >= 2 for the reference points, got bon_ns={self.bon_ns}.")
        largest = max(self.bon_ns, default=1)
        if self.num_reference_samples <= largest:
            raise ValueError(
                f"`num_reference_samples` ({self.num_reference_samples}) must exceed the largest N ({largest}): "
                f"Best-of-N uses the first N samples, p̂≤ the other M − N. Set it to {2 * largest} or drop the large N."
            )
        if self.num_policy_samples < 1:
            raise ValueError(f"`num_policy_samples` must be at least 1, got {self.num_policy_samples}.")
        if self.kl_metric not in ("kl_k1", "kl_k3"):
            raise ValueError(f"`kl_metric` must be 'kl_k1' or 'kl_k3', got {self.kl_metric!r}.")
        if self.quantile_smoothing not in SMOOTHINGS:
            raise ValueError(f"Unknown quantile smoothing {self.quantile_smoothing!r}; choose one of {SMOOTHINGS}.")


def _check_checkpoint(name: str, checkpoint) -> tuple[int | None, str | None]:
    """Fail before π_ref loads if a checkpoint cannot be loaded; `(its vocabulary size, its own tokenizer's folder)`,
    each `None` where it has none."""
    from transformers import AutoConfig

    if not isinstance(checkpoint, (str, Path)):
        return checkpoint.get_input_embeddings().num_embeddings, None
    local, path, adapter = Path(checkpoint), str(checkpoint), (Path(checkpoint) / "adapter_config.json").is_file()
    check_model_path(path, f"checkpoint '{name}'", model_folder=False)
    if local.exists() and not (local / "config.json").is_file() and not adapter:
        raise ValueError(
            f"Checkpoint '{name}': {path} holds no model (no config.json or adapter_config.json). Pass a folder "
            "written by `save_pretrained` or a training output_dir with `checkpoint-*` folders."
        )
    for weights in sorted(local.glob("*.safetensors")):  # a truncated copy would fail only after the sampling
        check_safetensors(weights, f"weights of checkpoint '{name}'")
    try:
        config = None if adapter else AutoConfig.from_pretrained(path).get_text_config()
    except OSError as error:
        raise ValueError(f"Checkpoint '{name}': cannot load a model config from {path!r} ({error}).") from error
    ships_tokenizer = any((local / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
    return getattr(config, "vocab_size", None), path if ships_tokenizer else None


def _check_shares_tokenizer(name: str, vocab: int | None, own_tokenizer: str | None, tokenizer) -> None:
    """Every model is sampled and scored with π_ref's tokenizer, so a checkpoint must share its vocabulary."""
    from transformers import AutoTokenizer

    if vocab is not None and vocab < len(tokenizer):
        raise ValueError(
            f"Checkpoint '{name}' has a {vocab}-token vocabulary but π_ref's tokenizer has {len(tokenizer)}: every "
            "model is sampled and scored with π_ref's tokenizer, so they must share its vocabulary."
        )
    if own_tokenizer is not None:
        own = AutoTokenizer.from_pretrained(own_tokenizer)
        if own.get_vocab() != tokenizer.get_vocab():
            raise ValueError(
                f"Checkpoint '{name}' ships a tokenizer with another vocabulary than π_ref's ({len(own)} vs "
                f"{len(tokenizer)} tokens); evaluate checkpoints trained from this π_ref."
            )


def _mean(values: torch.Tensor) -> float:
    return mean_and_sem(values)[0]


def _with_sem(key: str, values: torch.Tensor) -> dict:
    mean, sem = mean_and_sem(values)
    return {key: mean, f"{key}_sem": sem}


def _judge(name: str, values: torch.Tensor, wins: torch.Tensor) -> dict:
    return {name: _mean(values), f"{name}_win_rate_vs_ref": _mean(wins)}


def _sequence_logps(sampler: Sampler, prompt_ids: list, completion_ids: list) -> torch.Tensor:
    logps, mask = sampler.logps(prompt_ids, completion_ids)
    return (logps * mask).sum(-1).double()


def _effective_n(win_rate_vs_ref: float, kl: float) -> dict:
    return {
        "effective_n_win": effective_n_from_win_rate(win_rate_vs_ref).item(),
        "effective_n_kl": effective_n_from_kl(kl).item(),
    }


def evaluate_checkpoints(
    checkpoints: Mapping[str, object],
    prompts,
    reward,
    reference,
    options: EvalOptions | None = None,
    judges: Mapping[str, object] | None = None,
) -> EvaluationResults:
    """Evaluate checkpoints on held-out prompts against π_ref and Best-of-N; docs/evaluation.md describes the
    arguments, every metric and a runnable example, docs/maths.md §7 the estimators.

    Args:
        checkpoints (`dict[str, str | PreTrainedModel]`):
            Name → model path (model or LoRA adapter folder) or instance; `"method@step"` names share a line in plots.
        reference ([`~trl_bon.sampling.Sampler`], `str` or model):
            π_ref with the training's sampling settings, which serve every model; a path or model is wrapped in
            `Sampler(reference)`.
    """
    from .rewards import as_scorer

    options = options or EvalOptions()
    reference = reference if isinstance(reference, Sampler) else Sampler(reference)
    if reference.backend != "transformers":  # every sample is scored with the models' own log-probs
        raise ValueError("The evaluation needs transformers log-probs: pass a `Sampler` with backend='transformers'.")
    prompts, columns = prompts_and_columns(prompts)
    check_prompts(prompts)  # before `reference.tokenizer` loads π_ref
    scorer = as_scorer(reward)
    judges = {name: as_scorer(judge) for name, judge in (judges or {}).items()}
    found = {name: _check_checkpoint(name, checkpoint) for name, checkpoint in checkpoints.items()}
    for name, (vocab, own_tokenizer) in found.items():  # `reference.tokenizer` loads π_ref: after the paths' checks
        _check_shares_tokenizer(name, vocab, own_tokenizer, reference.tokenizer)
    bon_ns, m, k = options.bon_ns, options.num_reference_samples, options.num_policy_samples
    smoothing, num_prompts, progress = options.quantile_smoothing, len(prompts), reference.progress
    dataset = {"prompt": prompts, **columns}

    # reference samples: drawn once, reused for quantiles, win rates and Best-of-N
    scored = reference.score(dataset, m, scorer)
    ref, ref_rewards = scored.samples, scored.rewards.double()
    ref_judges = {
        name: score_samples(judge, ref, columns).double().view(num_prompts, m) for name, judge in judges.items()
    }
    prompt_ids = reference.prompt_ids(prompts)

    reference_row = {
        "name": "reference",
        "path": reference.model_name,
        "reward": _mean(ref_rewards.flatten()),
        "reward_sem": mean_and_sem(ref_rewards.mean(1))[1],
        # first reference sample vs the other M − 1: 0.5 in expectation, a sanity check of the win-rate code
        "win_rate_vs_ref": _mean(win_rate(ref_rewards[:, 0], ref_rewards[:, 1:])),
        "kl": 0.0,
    }
    reference_row.update(_effective_n(reference_row["win_rate_vs_ref"], 0.0))
    for name, values in ref_judges.items():
        reference_row.update(_judge(name, values.flatten(), win_rate(values[:, 0], values[:, 1:])))

    # Best-of-N draws: best of the first N reference samples per prompt (ties at random, seeded).
    seed = reference.seed or 0
    bon, bon_ids, bon_rewards, bon_ref_logps = [], {}, {}, {}
    for n in tqdm(bon_ns, desc="π_ref log-probs of BoN samples", disable=not progress):
        chosen = select_best(ref_rewards[:, :n], "random", torch.Generator().manual_seed(seed + n)).unsqueeze(1)
        bon_ids[n] = [ref.completion_ids[i * m + int(c)] for i, c in enumerate(chosen)]
        bon_rewards[n] = ref_rewards.gather(1, chosen).squeeze(1)
        bon_ref_logps[n] = _sequence_logps(reference, prompt_ids, bon_ids[n])
        held_out = ref_rewards[:, n:]  # independent of the BoN_n draw
        point = {
            "n": n,
            **_with_sem("reward", bon_rewards[n]),
            **_with_sem("win_rate_vs_ref", win_rate(bon_rewards[n], held_out)),
            "kl_bound": bon_kl_bound(n),
            "kl_estimate": _mean(log_bon_ratio(bon_rewards[n], held_out, n, smoothing)),
        }
        point.update(_effective_n(point["win_rate_vs_ref"], point["kl_estimate"]))  # ≈ n: a check of the meters
        for name, values in ref_judges.items():
            chosen_values = values.gather(1, chosen).squeeze(1)
            point.update(_judge(name, chosen_values, win_rate(chosen_values, values[:, n:])))
        bon.append(point)

    rows = []
    policy_prompt_ids = [ids for ids in prompt_ids for _ in range(k)]
    row_of = torch.arange(num_prompts).repeat_interleave(k)
    for name, checkpoint in tqdm(list(checkpoints.items()), desc="checkpoints", disable=not progress):
        sampler = reference.with_model(str(checkpoint) if isinstance(checkpoint, Path) else checkpoint)
        policy_scored = sampler.score(dataset, k, scorer, seed=seed + 1)
        samples, rewards = policy_scored.samples, policy_scored.rewards.double().flatten()
        pol_logps, mask = sampler.logps(policy_prompt_ids, samples.completion_ids)
        ref_logps, _ = reference.logps(policy_prompt_ids, samples.completion_ids)
        seq_log_ratio = kl_k1(pol_logps, ref_logps, mask).double()
        refs_per_sample = ref_rewards[row_of]
        metrics = {
            "name": name,
            "path": str(checkpoint) if isinstance(checkpoint, (str, Path)) else "<instance>",
            **_with_sem("reward", rewards),
            "log_quantile": _mean(torch.log(empirical_quantile(rewards, refs_per_sample, smoothing=smoothing))),
            **_with_sem("kl_k1", seq_log_ratio),
            **_with_sem("kl_k3", kl_k3(pol_logps, ref_logps, mask).double()),
            **_with_sem("win_rate_vs_ref", win_rate(rewards, refs_per_sample)),
            "win_rate_vs_ref_strict_first": float((rewards > refs_per_sample[:, 0]).double().mean()),
            "completion_length": float(mask.sum(-1).mean()),
            "example": {"prompt": samples.prompts[0], "completion": samples.completions[0]},
        }
        metrics.update(_effective_n(metrics["win_rate_vs_ref"], metrics["kl_k1"]))
        for judge_name, judge in judges.items():
            values = score_samples(judge, samples, columns).double()
            metrics.update(_judge(judge_name, values, win_rate(values, ref_judges[judge_name][row_of])))
        for n in bon_ns:
            policy_bon_logps = _sequence_logps(sampler, prompt_ids, bon_ids[n])
            backward = backward_kl_to_bon(seq_log_ratio, rewards, refs_per_sample, n, smoothing)
            forward = forward_kl_to_bon(
                bon_ref_logps[n], policy_bon_logps, bon_rewards[n], ref_rewards[:, n:], n, smoothing
            )
            metrics.update(_with_sem(f"win_rate_vs_bon{n}", win_rate(rewards, bon_rewards[n][row_of])))
            metrics.update({f"kl_to_bon{n}_backward": _mean(backward), f"kl_to_bon{n}_forward": _mean(forward)})
        rows.append(metrics)

    results = EvaluationResults(
        checkpoints=rows,
        bon=bon,
        reference=reference_row,
        settings={
            **asdict(options),
            "num_prompts": num_prompts,
            "generation": reference.settings.to_dict(),
            "seed": seed,
            "reward": scorer.signature(),
            "judges": list(judges),
            "reference_model": reference.model_name,
        },
    )
    if options.output_dir is None:
        return results
    output_dir = Path(options.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results.files = {"json": str(output_dir / "results.json"), "csv": str(output_dir / "results.csv")}
    table = [{"kind": "reference", **reference_row}] + [{"kind": "bon", "name": f"BoN-{b['n']}", **b} for b in bon]
    table += [{"kind": "checkpoint", **row} for row in rows]
    with open(results.files["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(key for row in table for key in row)))
        writer.writeheader()
        writer.writerows(table)
    if options.plot:
        from .plotting import plot_pareto

        results.files.update(plot_pareto(asdict(results), output_dir, kl_metric=options.kl_metric))
    Path(results.files["json"]).write_text(json.dumps(asdict(results), indent=2, default=str))
    return results

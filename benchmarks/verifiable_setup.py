# /// script
# requires-python = ">=3.11"
# dependencies = ["trl-bon"]
# ///
"""Build the verifiable task: reverse 3–5 digits, a tiny GPT-2 that does it right 20–50 % of the time, a 0/1 verifier.

A prompt is 3–5 space-separated digits and `=` ("3 1 4 ="); the correct completion is the digits reversed ("4 1 3").
The verifier is plain Python (`recipes.rewards.reversal.reversal_accuracy`): 1.0 if the completion is exactly that.
Reversal is one rule for every prompt, so what a policy learns on training prompts can carry to held-out ones.
Everything is synthetic and built offline:

- split: every digit string of length 3–5 (111,000) is assigned once to train or held-out (`--test-fraction`);
  held-out strings are never seen in pretraining nor training;
- tokenizer: word-level over `0`–`9`, `=`, `<eos>` (also BOS), `<pad>` and `<unk>`, saved with the policy
  (`PreTrainedTokenizerFast`, loads by path), so TRL decodes a completion as "4 1 3";
- policy π_ref: `GPT2LMHeadModel` (learned absolute positions, dropout 0.1 kept in its config), default 3 layers × 96
  wide (≈ 0.34 M parameters), pretrained from scratch on the completion tokens (answer + EOS) of a deliberately
  imperfect corpus: the answer is correct with probability `--correct` per length (0.45 / 0.3 / 0.15 for 3 / 4 / 5
  digits), otherwise a corrupted reversal (one digit changed, two neighbours swapped, not reversed, a digit dropped
  or doubled); π_ref's held-out pass@1 (recorded in `steps/pretrain.json`) lands somewhat above these rates, as the
  small model spreads less mass over the many corruptions than the corpus does, and differs by prompt length;
- prompts: `prompts/{train,test}.jsonl` (one `prompt` column), `--train-prompts` training strings and
  `--test-prompts` held-out ones, a third of each length.

    python benchmarks/verifiable_setup.py                   # ~2 min on one core; < 10 MB (~/.cache/...)
    python benchmarks/verifiable_setup.py --force pretrain  # redo one step and the ones depending on it
    python benchmarks/verifiable_setup.py --max-steps 20 --cache-dir /tmp/v   # smoke size (tests)

Steps write `<cache>/steps/<step>.json` when they finish and are skipped next time (`--force STEP` redoes a step).
"""

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import replication_setup as shared  # noqa: E402  (the step cache)


STEPS = ("split", "tokenizer", "prompts", "pretrain")
CONSUMERS = {"split": STEPS[1:], "tokenizer": ("pretrain",), "prompts": ("pretrain",)}
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "trl-bon-verifiable")
LENGTHS = (3, 4, 5)
EOS, PAD, UNK = "<eos>", "<pad>", "<unk>"
#: π_ref's intended success rate per prompt length: the share of correct answers in its pretraining corpus
CORRECT = {3: 0.45, 4: 0.3, 5: 0.15}
#: completion tokens the task needs: 5 digits + EOS; recipes allow 8, so a rambling completion is sampled and scored 0
ANSWER_TOKENS = 6


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE, help="where everything is prepared (outside the repo)")
    parser.add_argument("--force", action="append", default=[], choices=STEPS, help="redo this step (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float, default=0.1, help="share of digit strings held out")
    parser.add_argument("--train-prompts", type=int, default=4096)
    parser.add_argument("--test-prompts", type=int, default=300)
    parser.add_argument(
        "--correct",
        type=float,
        nargs=3,
        default=[CORRECT[n] for n in LENGTHS],
        metavar=("P3", "P4", "P5"),
        help="share of correct answers in the pretraining corpus for 3, 4 and 5 digits",
    )
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--pretrain-steps", type=int, default=1500)
    parser.add_argument("--pretrain-lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=None, help="cap the pretraining loop (smoke tests)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0")) or None)
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(f"[verifiable-setup {time.strftime('%H:%M:%S')}] {message}", flush=True)


def prompt_of(digits: str) -> str:
    return " ".join(digits) + " ="


def answer_of(digits: str) -> str:
    return " ".join(reversed(digits))


def corrupt(digits: str, rng: random.Random) -> str:
    """A wrong answer close to the right one: the reversal with one digit changed, two neighbours swapped, a digit
    dropped or doubled, or the digits not reversed (for a palindrome: one digit changed)."""
    right = list(reversed(digits))
    kind = rng.choice(("change", "swap", "copy", "drop", "double"))
    i = rng.randrange(len(right))
    if kind == "swap" and right[i] != right[(i + 1) % len(right)] and i + 1 < len(right):
        wrong = right[:i] + [right[i + 1], right[i]] + right[i + 2 :]
    elif kind == "copy" and list(digits) != right:
        wrong = list(digits)
    elif kind == "drop":
        wrong = right[:i] + right[i + 1 :]
    elif kind == "double":
        wrong = right[: i + 1] + right[i:]
    else:  # change (also the fallback where a swap or copy would give the right answer)
        wrong = list(right)
        wrong[i] = rng.choice([d for d in "0123456789" if d != right[i]])
    assert wrong != right
    return " ".join(wrong)


def step_split(cache, args) -> dict:
    """Every digit string of 3–5 digits, shuffled once and cut into train / held-out."""
    rng = random.Random(args.seed)
    strings = [f"{i:0{n}d}" for n in LENGTHS for i in range(10**n)]
    rng.shuffle(strings)
    cut = int(len(strings) * args.test_fraction)
    split = {"test": sorted(strings[:cut]), "train": sorted(strings[cut:])}
    cache.path("data").mkdir(exist_ok=True)
    for name, rows in split.items():
        cache.path("data", f"{name}.txt").write_text("\n".join(rows) + "\n")
    return {"train": len(split["train"]), "test": len(split["test"])}


def read_split(cache, name: str) -> list[str]:
    return cache.path("data", f"{name}.txt").read_text().split()


def step_tokenizer(cache, args) -> dict:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([PAD, EOS, UNK, "=", *"0123456789"])}
    word_level = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    word_level.decoder = decoders.WordPiece(prefix="##")  # joins words with single spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level, bos_token=EOS, eos_token=EOS, pad_token=PAD, unk_token=UNK
    )
    tokenizer.model_max_length = 16
    tokenizer.save_pretrained(cache.path("policy"))
    ids = tokenizer(prompt_of("314"))["input_ids"]
    assert tokenizer.decode(tokenizer(answer_of("314"))["input_ids"]) == "4 1 3", "the tokenizer must round-trip"
    return {"vocab": len(tokenizer), "prompt_314": ids}


def corpus_batch(by_length: dict, rng: random.Random, correct: dict, size: int) -> list[tuple[str, str]]:
    """`size` (prompt, answer) pairs, lengths uniform over 3–5, each answer correct with its length's probability
    (`by_length`: the training strings of each length)."""
    rows = []
    for _ in range(size):
        digits = rng.choice(by_length[rng.choice(LENGTHS)])
        good = rng.random() < correct[len(digits)]
        rows.append((prompt_of(digits), answer_of(digits) if good else corrupt(digits, rng)))
    return rows


def encode_batch(tokenizer, rows):
    """input_ids (right-padded) and labels: loss on the answer and EOS only (the prompt is given, not learned)."""
    import torch

    seqs, labels = [], []
    for prompt, answer in rows:
        p, a = tokenizer(prompt)["input_ids"], tokenizer(answer)["input_ids"] + [tokenizer.eos_token_id]
        seqs.append(p + a)
        labels.append([-100] * len(p) + a)
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id)
    lab = torch.full((len(seqs), width), -100)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, y) in enumerate(zip(seqs, labels)):
        ids[i, : len(s)], lab[i, : len(y)], mask[i, : len(s)] = torch.tensor(s), torch.tensor(y), 1
    return ids, mask, lab


def sample_pass_rate(model, tokenizer, prompts: list[str], samples: int = 1) -> dict:
    """Held-out success rate of `model` by sampling (temperature 1, no top-k), grouped by prompt length so no
    batch needs padding; returns the overall and per-length rates."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from recipes.rewards.reversal import reversal_accuracy

    model.eval()
    hits = {n: [] for n in LENGTHS}
    for n in LENGTHS:
        group = [p for p in prompts if len(p.split()) == n + 1]
        if not group:
            continue
        ids = torch.tensor([tokenizer(p)["input_ids"] for p in group]).repeat_interleave(samples, 0)
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                top_k=0,
                max_new_tokens=ANSWER_TOKENS + 2,
                pad_token_id=tokenizer.pad_token_id,
            )
        texts = tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
        hits[n] = reversal_accuracy([p for p in group for _ in range(samples)], texts)
    rates = {f"pass@1_len{n}": sum(h) / len(h) for n, h in hits.items() if h}
    every = [x for h in hits.values() for x in h]
    return {"pass@1": sum(every) / len(every), **rates}


def step_pretrain(cache, args) -> dict:
    """Pretrain π_ref from scratch on the noisy corpus (fresh batches every step), AdamW with warm-up and cosine."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(cache.path("policy"))
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=16,  # 5 digits + '=' + up to 8 completion tokens fit
        n_embd=args.width,
        n_layer=args.layers,
        n_head=args.heads,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # GPT-2's dropout (resid/embd/attn 0.1) stays in the config
    model = GPT2LMHeadModel(config)
    train = read_split(cache, "train")
    by_length = {n: [s for s in train if len(s) == n] for n in LENGTHS}
    correct = dict(zip(LENGTHS, args.correct))
    steps = args.pretrain_steps if args.max_steps is None else min(args.pretrain_steps, args.max_steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.pretrain_lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    model.train()
    start, running = time.perf_counter(), None
    for step in range(steps):
        ids, mask, labels = encode_batch(tokenizer, corpus_batch(by_length, rng, correct, args.batch_size))
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % 250 == 0 or step + 1 == steps:
            log(f"  pretrain step {step + 1}/{steps} loss {running:.3f} ({time.perf_counter() - start:.0f}s)")
    seconds = time.perf_counter() - start
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.eos_token_id
    model.save_pretrained(cache.path("policy"))
    held_out = [json.loads(line)["prompt"] for line in cache.path("prompts", "test.jsonl").read_text().splitlines()]
    torch.manual_seed(args.seed)
    info = {
        "path": str(cache.path("policy")),
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "seconds": seconds,
        "final_loss": running,
        "corpus_correct": correct,
        "held_out": sample_pass_rate(model, tokenizer, held_out, samples=4),
    }
    log(f"policy: {info}")
    return info


def step_prompts(cache, args) -> dict:
    """`prompts/{train,test}.jsonl`: training and held-out digit strings as prompts, drawn once (seed), a third of
    each split per length (all of a length's strings where it has fewer: 5-digit strings are 90 % of all, and
    π_ref's success rate, hence what Best-of-N can gain, differs by length)."""
    rng = random.Random(args.seed + 2)
    folder = cache.path("prompts")
    folder.mkdir(exist_ok=True)
    counts = {}
    for split, size in (("train", args.train_prompts), ("test", args.test_prompts)):
        strings = read_split(cache, split)
        rows = []
        for n in LENGTHS:
            of_length = [s for s in strings if len(s) == n]
            rows += rng.sample(of_length, min(size // len(LENGTHS), len(of_length)))
        rng.shuffle(rows)
        with open(folder / f"{split}.jsonl", "w") as out:
            out.writelines(json.dumps({"prompt": prompt_of(s)}) + "\n" for s in rows)
        counts[split] = len(rows)
    return counts


def main(argv=None):
    args = parse_args(argv)
    shared.offline_setup_env(args.threads)
    cache = shared.Cache(args.cache_dir, args.force, CONSUMERS)
    runners = {
        "split": lambda: step_split(cache, args),
        "tokenizer": lambda: step_tokenizer(cache, args),
        "pretrain": lambda: step_pretrain(cache, args),
        "prompts": lambda: step_prompts(cache, args),
    }
    manifest = {"cache_dir": str(cache.root), "args": vars(args)}
    for step in STEPS:
        manifest[step] = cache.run(step, runners[step], log)
    (cache.root / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    log(f"ready: {cache.root / 'manifest.json'}")
    return manifest


if __name__ == "__main__":
    main()

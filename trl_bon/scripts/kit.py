"""Write the offline try-out kit (docs/tryout.md) and print its command lines, the `trl-bon kit` subcommand.

trl-bon kit trl_bon_kit            # then copy the printed lines, one by one
"""

import argparse
import json
import shlex
import sys
from pathlib import Path


#: Settings every training command of the kit shares: CPU, fp32, a few short steps, no trackers.
CPU_TRAINING = {
    "use_cpu": True,
    "bf16": False,
    "report_to": "none",
    "max_steps": 8,
    "logging_steps": 1,
    "max_completion_length": 8,
    "learning_rate": 1.0e-2,
    "dataloader_num_workers": 0,
    "seed": 0,
}


def write_prompts(folder: Path) -> None:
    """Prompt-only `train`/`test` splits: 2–5-word prefixes of the tokenizer's corpus sentences."""
    from trl_bon.toy import CORPUS

    prefixes = [" ".join(text.split()[:length]) for text in CORPUS for length in (2, 3, 4, 5)]
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", prefixes), ("test", prefixes[::3])):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps({"prompt": prompt}) + "\n" for prompt in rows))


def kit_configs(root: Path) -> dict[str, dict]:
    """The YAML of each command, keyed by file stem."""
    out = root / "out"
    data = {"model_name_or_path": str(root / "policy"), "reward_model_name_or_path": [str(root / "reward")]}
    data["dataset_name"] = str(root / "prompts")

    def training(stem: str, **settings) -> dict:
        return {**data, **CPU_TRAINING, "output_dir": str(out / stem), **settings}

    return {
        "jbond": training(
            "jbond",
            per_device_train_batch_size=6,  # J-BOND: groups of 1 policy + 2 anchor completions
            use_peft=True,
            lora_r=4,
            lora_target_modules=["q_proj", "v_proj"],
            save_strategy="steps",
            save_steps=4,
        ),
        "vbon": training(
            "vbon",
            reference_cache_dir=str(out / "reference_rewards"),
            num_reference_samples=16,
            num_candidates=4,
            num_generations=2,
            per_device_train_batch_size=4,
            save_strategy="no",
        ),
        "bon_sft": training("bon_sft", num_candidates=4, per_device_train_batch_size=4, save_strategy="no"),
        "eval": {
            **data,
            "dataset_test_split": "test",
            "checkpoints": [f"jbond={out / 'jbond'}", f"vbon={out / 'vbon'}", f"bon-sft={out / 'bon_sft'}"],
            "num_prompts": 8,
            "num_reference_samples": 16,
            "bon_ns": [2, 4, 8],
            "max_completion_length": CPU_TRAINING["max_completion_length"],
            "output_dir": str(out / "eval"),
        },
    }


#: The 0/1 verifier, passed by dotted path (`verifier.says_the`) as users pass theirs (docs/verifiable_rewards.md).
VERIFIER = """\"\"\"A 0/1 verifier for the try-out kit: 1.0 if the completion contains the word "the", else 0.0.\"\"\"


def says_the(completions, **kwargs):
    return [float("the" in completion.split()) for completion in completions]
"""


def verifier_config(root: Path) -> dict:
    """J-BOND on the kit's policy with the 0/1 verifier instead of the reward model: ties count half a loss
    (`jbond_ties: half`) and the anchor stays π_ref, so the target is Best-of-2 of π_ref (pass@2)."""
    config = {**kit_configs(root)["jbond"], "reward_funcs": ["verifier.says_the"], "jbond_ties": "half"}
    for key in ("reward_model_name_or_path", "use_peft", "lora_r", "lora_target_modules", "save_steps"):
        del config[key]  # the verifier instead of the reward model, full fine-tuning, no checkpoints
    return {**config, "output_dir": str(root / "out" / "jbond_verifier"), "anchor": "fixed", "save_strategy": "no"}


def write_kit(root: str | Path, seed: int = 0) -> list[tuple[str, str]]:
    """Build models, prompts and YAML files under `root`; return `(what it does, command line)` of each command, in
    the order to run them."""
    import yaml

    from trl_bon.toy import build_tiny_kit

    root = Path(root).resolve()
    build_tiny_kit(root, seed=seed)
    write_prompts(root / "prompts")
    for stem, config in {**kit_configs(root), "jbond_verifier": verifier_config(root)}.items():
        (root / f"{stem}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (root / "verifier.py").write_text(VERIFIER)
    config = {stem: shlex.quote(str(root / f"{stem}.yaml")) for stem in ("jbond", "vbon", "bon_sft", "eval")}
    return [
        ("J-BOND with LoRA, a checkpoint every 4 steps", f"trl-bon jbond --config {config['jbond']}"),
        ("vBoN, step 1: M=16 reference rewards per prompt", f"trl-bon cache-ref-rewards --config {config['vbon']}"),
        ("vBoN, step 2: train on the cache", f"trl-bon vbon --config {config['vbon']}"),
        ("BoN-SFT: sample 4, keep the best, fine-tune", f"trl-bon bon-sft --config {config['bon_sft']}"),
        ("Evaluate all three against π_ref and Best-of-N", f"trl-bon eval --config {config['eval']}"),
    ]


def make_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Write the offline try-out kit and print its commands.")
    parser.add_argument("directory", help="Folder to write the kit to (created; existing kit files are replaced).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the tiny models' initialisation.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser(prog="trl-bon kit").parse_args(argv)
    commands = write_kit(args.directory, seed=args.seed)
    root = Path(args.directory).resolve()
    print(f"Offline try-out kit written to {root}: policy/ (π_ref), reward/, prompts/, one YAML per command.\n")
    for stem in ("jbond", "vbon", "bon_sft", "eval"):
        print(f"# {root / f'{stem}.yaml'}\n{(root / f'{stem}.yaml').read_text()}")
    print("Run, in this order (each takes about 10 s on an idle 2-core CPU, mostly start-up):\n")
    for what, command in commands:
        print(f"# {what}\n{command}\n")
    print(
        "# Optional: a 0/1 verifier (verifier.py, passed by dotted path) instead of the reward model, J-BOND, ties "
        "counted half (docs/verifiable_rewards.md); run from the kit folder so `verifier` imports\n"
        f"#   cd {shlex.quote(str(root))} && trl-bon jbond --config jbond_verifier.yaml\n\n"
        "# Optional: two CPU processes (trl-bon starts them with torchrun; see docs/cli.md, Launching)\n"
        f"#   {commands[0][1]} --num_processes 2 --output_dir {shlex.quote(str(root / 'out' / 'jbond-2proc'))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `trl-bon` command line.

`trl` has no plugin hook for new subcommands (its CLI is a fixed list), so trl-bon ships its own entry point. Each
subcommand lives in `trl_bon/scripts/<module>.py` and exposes `make_parser(prog=None)` and `main(argv=None)`; the
modules are imported only when their subcommand runs, so `trl-bon --help` and `--version` stay fast.
"""

import argparse
import importlib
import sys

from trl_bon import __version__


# subcommand -> (module under trl_bon.scripts, one-line help)
SUBCOMMANDS = {
    "jbond": ("jbond", "Train with J-BOND / BOND (JBondTrainer)."),
    "vbon": ("vbon", "Train with variational Best-of-N (VBoNTrainer)."),
    "bon-sft": ("bon_sft", "Fine-tune on Best-of-N samples (BoNSFTTrainer)."),
    "cache-ref-rewards": ("cache_ref_rewards", "Sample and score reference completions for vBoN's reward CDF."),
    "eval": ("evaluate", "Evaluate checkpoints: reward, KL, win rates, reward-vs-KL plots."),
    "demo": ("demo", "Offline demo: J-BOND on a tiny task with a known Best-of-N distribution."),
}


def _available(module: str) -> bool:
    return importlib.util.find_spec(f"trl_bon.scripts.{module}") is not None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trl-bon",
        description="Best-of-N distillation for TRL: J-BOND/BOND, vBoN and BoN-SFT trainers, evaluation and a demo. "
        "Run `trl-bon <command> --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"trl-bon {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (module, help_text) in SUBCOMMANDS.items():
        if _available(module):
            subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, _ = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(f"trl_bon.scripts.{SUBCOMMANDS[args.command][0]}")
    rest = argv[argv.index(args.command) + 1 :]
    return module.main(rest) or 0


if __name__ == "__main__":
    raise SystemExit(main())

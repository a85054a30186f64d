"""The `trl-bon` command line.

`trl` has no plugin hook for new subcommands (its CLI is a fixed list), so trl-bon ships its own entry point. Each
subcommand lives in `trl_bon/scripts/<module>.py` and exposes `make_parser(prog=None)` and `main(argv=None)`; the
modules are imported only when their subcommand runs, so `trl-bon --help` and `--version` stay fast.

Training subcommands (`jbond`, `vbon`, `bon-sft`) behave like `trl rloo`/`trl sft`: the arguments are parsed once
(so `--help` and argument errors appear before anything starts), then the module is re-launched under
`accelerate launch -m trl_bon.scripts.<module> …`. Arguments the training parser does not know (from the command line
or from keys of the `--config` YAML) go to `accelerate launch`, e.g. `--num_processes 2`, `--config_file
recipes/accelerate/multi_gpu.yaml` or `--accelerate_config <path or TRL config name>`. Set `TRL_BON_LAUNCH=0` (or call
`main(argv, launch=False)`) to run the training in the current process instead, as the tests do.
"""

import argparse
import importlib
import importlib.util
import os
import sys
from pathlib import Path

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
#: Subcommands re-launched under `accelerate launch` (the others run in-process).
TRAINING_COMMANDS = ("jbond", "vbon", "bon-sft")


def _available(module: str) -> bool:
    return importlib.util.find_spec(f"trl_bon.scripts.{module}") is not None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trl-bon",
        description="Best-of-N distillation for TRL: J-BOND/BOND, vBoN and BoN-SFT trainers, evaluation and a demo. "
        "Run `trl-bon <command> --help` for the options of a command.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"trl-bon {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (module, help_text) in SUBCOMMANDS.items():
        if _available(module):
            subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def _subtract_subsequence(items: list[str], subsequence: list[str]) -> list[str]:
    """`items` without the ordered `subsequence` (the launcher's arguments, which argparse returns in order)."""
    remaining, it = [], iter(subsequence)
    current = next(it, None)
    for item in items:
        if current is not None and item == current:
            current = next(it, None)
        else:
            remaining.append(item)
    return remaining


def _resolve_accelerate_config(launch_args: list[str]) -> list[str]:
    """`--accelerate_config X` → `--config_file X`, X being a file or a config shipped with TRL (`zero3`, …)."""
    if "--accelerate_config" not in launch_args:
        return launch_args
    index = launch_args.index("--accelerate_config")
    if index + 1 >= len(launch_args):
        raise ValueError(
            "Expected a value after `--accelerate_config` (a YAML path, e.g. recipes/accelerate/multi_gpu.yaml)."
        )
    value = launch_args[index + 1]
    if not Path(value).is_file():
        from importlib import resources

        candidate = resources.files("trl.accelerate_configs").joinpath(f"{value}.yaml")
        if not candidate.is_file():
            raise ValueError(
                f"`--accelerate_config {value}` is neither a file nor a config shipped with TRL; pass a path such as "
                "recipes/accelerate/multi_gpu.yaml."
            )
        value = str(candidate)
    return ["--config_file", value] + launch_args[:index] + launch_args[index + 2 :]


def launch_training(command: str, argv: list[str]) -> int:
    """Parse `argv` with the subcommand's parser, then re-run the module under `accelerate launch`."""
    from accelerate.commands.launch import launch_command, launch_command_parser

    module_name = SUBCOMMANDS[command][0]
    module = importlib.import_module(f"trl_bon.scripts.{module_name}")
    parser = module.make_parser(prog=f"trl-bon {command}")
    *_, config_remaining, cli_remaining = parser.parse_args_and_config(
        argv, return_remaining_strings=True, separate_remaining_strings=True
    )
    launch_args = _resolve_accelerate_config(config_remaining + cli_remaining)
    script_args = _subtract_subsequence(argv, cli_remaining)
    accelerate_args = launch_command_parser().parse_args(
        launch_args + ["--module", f"trl_bon.scripts.{module_name}"] + script_args
    )
    launch_command(accelerate_args)
    return 0


def main(argv: list[str] | None = None, launch: bool | None = None) -> int:
    """Entry point of `trl-bon`. `launch=False` (or `TRL_BON_LAUNCH=0`) runs training subcommands in-process."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, _ = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    rest = argv[argv.index(args.command) + 1 :]
    if launch is None:
        launch = os.environ.get("TRL_BON_LAUNCH", "1") not in ("0", "false", "False")
    if launch and args.command in TRAINING_COMMANDS and "-h" not in rest and "--help" not in rest:
        return launch_training(args.command, rest)
    module = importlib.import_module(f"trl_bon.scripts.{SUBCOMMANDS[args.command][0]}")
    if "-h" in rest or "--help" in rest:
        module.make_parser(prog=f"trl-bon {args.command}").parse_args(["--help"])
    return getattr(module, "cli", module.main)(rest) or 0  # `cli(argv)` where `main` takes parsed arguments


if __name__ == "__main__":
    raise SystemExit(main())

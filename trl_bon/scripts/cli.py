"""The `trl-bon` command line (`trl` has no plugin hook for new subcommands). Each subcommand is a module
`trl_bon.scripts.<module>` with `make_parser(prog=None)` and `main`, imported only when it runs (`--help` stays fast);
arguments a training subcommand's parser does not know must be flags of `accelerate launch` (docs/cli.md)."""

import argparse
import importlib
import os
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
    "plot": ("plot", "Redraw the figures of an evaluation's results.json (log-x, axis limits)."),
    "kit": ("kit", "Write a tiny offline model, reward model and dataset, and print a command line for each command."),
}
#: Subcommands that may run several processes (the others run in this process).
TRAINING_COMMANDS = ("jbond", "vbon", "bon-sft")
#: Subcommands whose module imports TRL (about 10 s): on a terminal, a transient notice on stderr says so.
SLOW_IMPORT_COMMANDS = (*TRAINING_COMMANDS, "cache-ref-rewards", "eval")
#: `accelerate launch` settings that leave a single-process run as it would be in this process.
SINGLE_PROCESS_SETTINGS = {"num_processes": 1, "num_machines": 1, "mixed_precision": "no", "dynamo_backend": "no"}

LAUNCH_HELP = """\
Launch: flags of `accelerate launch` pass through (`--num_processes 2`, `--config_file
recipes/accelerate/multi_gpu.yaml`, `--accelerate_config zero3` for a config shipped with TRL). One process runs in
this Python process, without a relaunch; several run under `accelerate launch`, or under `torchrun` when there is no
GPU (accelerate runs CPU processes only through MPI). `TRL_BON_LAUNCH=0` always runs in this process."""


def launch_route(launch_args: list[str]) -> tuple[str, int]:
    """`("in_process" | "torchrun" | "accelerate", number of processes)` for these `accelerate launch` flags."""
    import torch
    from accelerate.commands.config import default_config_file
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    launcher = launch_command_parser()
    args = vars(launcher.parse_args([*launch_args, "-m", "trl_bon"]))
    defaults = vars(launcher.parse_args(["-m", "trl_bon"]))
    config_file = args["config_file"] or (default_config_file if os.path.isfile(default_config_file) else None)
    config = load_config_from_file(config_file) if config_file else None
    num_processes = args["num_processes"] or (config.num_processes if config else None) or 1
    if not torch.cuda.is_available() and num_processes > 1:
        engine = str(config.distributed_type).split(".")[-1] if config else "NO"
        if args["use_deepspeed"] or args["use_fsdp"] or engine in ("DEEPSPEED", "FSDP"):
            raise ValueError(
                f"{num_processes} processes with DeepSpeed/FSDP were asked for, but there is no GPU and `accelerate "
                "launch` does not start them on CPU. Drop the DeepSpeed/FSDP config to train with several CPU "
                "processes (plain data parallel through torchrun), or run on GPUs."
            )
        return "torchrun", num_processes
    changed = {
        key
        for key, value in args.items()
        if value != defaults[key]
        and key != "nondefault"  # accelerate's own record of the flags given
        and str(SINGLE_PROCESS_SETTINGS.get(key)).lower() != str(value).lower()
    }
    if not changed and config is None and torch.cuda.device_count() <= 1:
        return "in_process", 1
    return "accelerate", num_processes


def launch(route: str, num_processes: int, module_name: str, launch_args: list[str], script_args: list[str]) -> None:
    """Run `-m trl_bon.scripts.<module_name> <script_args>` under `torchrun` or `accelerate launch`."""
    module = f"trl_bon.scripts.{module_name}"
    if route == "torchrun":
        from torch.distributed.run import main as torchrun

        print(f"trl-bon: no GPU, starting {num_processes} CPU processes with torchrun (gloo).", file=sys.stderr)
        os.environ["ACCELERATE_USE_CPU"] = "true"
        torchrun(["--standalone", "--nproc_per_node", str(num_processes), "-m", module, *script_args])
    else:
        from accelerate.commands.launch import launch_command, launch_command_parser

        launch_command(launch_command_parser().parse_args([*launch_args, "-m", module, *script_args]))


def run_command(command: str, argv: list[str], allow_launch: bool) -> int:
    """Parse `argv` with the subcommand's parser, then run its `main` here or under a launcher."""
    module_name = SUBCOMMANDS[command][0]
    notice = command in SLOW_IMPORT_COMMANDS and sys.stderr.isatty()  # else the terminal sits silent for ~10 s
    if notice:  # a transient line, erased once imported: errors and logs below stay as they are
        print(f"trl-bon {command}: loading TRL and transformers…", end="", file=sys.stderr, flush=True)
    module = importlib.import_module(f"trl_bon.scripts.{module_name}")
    if notice:
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    if command not in TRAINING_COMMANDS:  # `main(argv)` parses on its own; no TRL import for the launch logic below
        return module.main(argv) or 0
    from trl.cli.accelerate_config import resolve_accelerate_config_argument

    from trl_bon._trl_compat import _subtract_subsequence

    parser = module.make_parser(prog=f"trl-bon {command}")
    *parsed, config_remaining, cli_remaining = parser.parse_args_and_config(
        argv, return_remaining_strings=True, separate_remaining_strings=True
    )
    launch_args = resolve_accelerate_config_argument(config_remaining + cli_remaining)
    route, num_processes = launch_route(launch_args) if allow_launch else ("in_process", 1)
    # `loss` alone can look flat: say where every logged metric is explained
    print(f"trl-bon {command}: the logged metrics are explained in docs/metrics.md", file=sys.stderr, flush=True)
    if route != "in_process":
        launch(route, num_processes, module_name, launch_args, _subtract_subsequence(argv, cli_remaining))
    else:
        module.main(*parsed)
    return 0


def main(argv: list[str] | None = None, launch: bool | None = None) -> int:
    """Entry point of `trl-bon`. `launch=False` (or `TRL_BON_LAUNCH=0`) runs training subcommands in-process."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="trl-bon",
        description="Best-of-N distillation for TRL: J-BOND/BOND, vBoN and BoN-SFT trainers, evaluation, a demo and "
        "an offline try-out kit. Run `trl-bon <command> --help` for the options of a command.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"trl-bon {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (_, help_text) in SUBCOMMANDS.items():
        subparsers.add_parser(name, help=help_text, add_help=False)
    args, _ = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    rest = argv[argv.index(args.command) + 1 :]
    if "-h" in rest or "--help" in rest:
        module = importlib.import_module(f"trl_bon.scripts.{SUBCOMMANDS[args.command][0]}")
        help_parser = module.make_parser(prog=f"trl-bon {args.command}")
        if args.command in TRAINING_COMMANDS:
            help_parser.description = f"{help_parser.description}\n\n{LAUNCH_HELP}"
        help_parser.parse_args(["--help"])
    if launch is None:
        launch = os.environ.get("TRL_BON_LAUNCH", "1") not in ("0", "false", "False")
    try:
        return run_command(args.command, rest, allow_launch=launch)
    except FileNotFoundError as error:
        # A typo in a model path: one line says it all (`identity` is looked up lazily: it imports torch)
        identity = sys.modules.get("trl_bon.identity")
        if identity is None or not isinstance(error, identity.ModelPathError):
            raise
        print(f"trl-bon {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

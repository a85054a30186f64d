"""Redraw an evaluation's figures from its `results.json`, without a model, the `trl-bon plot` subcommand.

trl-bon plot eval-imdb/results.json --log_x --xlim 0 5 --win_rate_ylim 0.4 1
"""

import argparse
import json
import sys
from pathlib import Path


def make_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Redraw the figures of an evaluation's results.json.")
    parser.add_argument("results", help="results.json written by `trl-bon eval` (or `evaluate_checkpoints`).")
    parser.add_argument("--output_dir", help="Where the PNGs and SVGs go (default: the folder of results.json).")
    parser.add_argument("--kl_metric", default="kl_k1", choices=("kl_k1", "kl_k3"), help="KL on the x axis.")
    parser.add_argument("--log_x", action="store_true", help="Symmetric-log KL axis (π_ref at 0 stays visible).")
    parser.add_argument("--xlim", nargs=2, type=float, metavar=("LEFT", "RIGHT"), help="Limits of the KL axis.")
    parser.add_argument("--reward_ylim", nargs=2, type=float, metavar=("BOTTOM", "TOP"), help="Reward axis limits.")
    parser.add_argument("--methods", nargs="+", metavar="METHOD", help="Only these methods (e.g. `jbond`), in order.")
    parser.add_argument("--title", default="", help="A heading over every figure (e.g. the task and the run).")
    parser.add_argument("--win_rate_ylim", nargs=2, type=float, metavar=("BOTTOM", "TOP"), help="Win-rate limits.")
    return parser


def main(argv: list[str] | None = None) -> int:
    from trl_bon.plotting import plot_pareto

    args = make_parser(prog="trl-bon plot").parse_args(argv)
    path = Path(args.results)
    ylim = {"reward": args.reward_ylim, "win_rate_vs_ref": args.win_rate_ylim}
    same_name = {name: getattr(args, name) for name in ("kl_metric", "log_x", "xlim", "title", "methods")}
    files = plot_pareto(json.loads(path.read_text()), args.output_dir or path.parent, ylim=ylim, **same_name)
    for name, file in files.items():
        print(f"{name:>15}: {file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

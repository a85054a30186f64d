"""Reward-vs-KL and win-rate-vs-KL plots (the papers' Pareto figures), with matplotlib's Agg backend.

matplotlib is an optional dependency (`pip install 'trl-bon[plot]'`); everything else in trl-bon works without it.
"""

from pathlib import Path


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            "Plotting needs matplotlib: `pip install 'trl-bon[plot]'` (or `pip install matplotlib`), or pass "
            "`plot=False` / `--no_plot` to skip the figures (results.json and results.csv are still written)."
        ) from error
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _method_and_step(name: str) -> tuple[str, float]:
    """`"jbond@200"` → `("jbond", 200)`; names without `@step` form their own group."""
    method, _, step = name.partition("@")
    try:
        return method, float(step)
    except ValueError:
        return (method if step else name), float("inf")


PARETO_METRICS = (
    ("reward", "mean reward", "reward_vs_kl.png"),
    ("win_rate_vs_ref", "win rate vs π_ref (ties ½)", "win_rate_vs_kl.png"),
)


def plot_pareto(
    results: dict, output_dir: str | Path, kl_metric: str = "kl_k1", metrics: tuple = PARETO_METRICS
) -> dict:
    """Draw one metric-vs-KL figure per `(key, y label, file name)` in `metrics` from an evaluation result dict.

    By default `reward_vs_kl.png` and `win_rate_vs_kl.png`; any key present in the checkpoint rows, the Best-of-N
    points and the reference works (e.g. an independent judge's score).

    Checkpoints named `method@step` are joined in step order, one line per method. The Best-of-N curve is drawn at
    the bound log N − (N−1)/N (solid, the papers' convention) and at the Monte-Carlo estimate (dashed); π_ref sits at
    KL 0.

    Returns:
        `{file name without .png: path}`, e.g. `{"reward_vs_kl": path, "win_rate_vs_kl": path}`.
    """
    plt = _pyplot()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list] = {}
    for row in results["checkpoints"]:
        method, step = _method_and_step(row["name"])
        groups.setdefault(method, []).append((step, row))
    bon, reference = results["bon"], results["reference"]
    files = {}
    for key, ylabel, filename in metrics:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        if bon:
            ys = [reference[key]] + [b[key] for b in bon]
            ax.plot([0.0] + [b["kl_bound"] for b in bon], ys, "k-o", ms=4, label="Best-of-N (KL bound)")
            ax.plot([0.0] + [b["kl_estimate"] for b in bon], ys, "k--", alpha=0.5, label="Best-of-N (KL estimate)")
            for b in bon:
                ax.annotate(
                    f"N={b['n']}", (b["kl_bound"], b[key]), textcoords="offset points", xytext=(4, -10), fontsize=8
                )
        ax.plot([0.0], [reference[key]], "ks", ms=7, label="π_ref")
        for method, points in groups.items():
            points.sort(key=lambda p: p[0])
            xs = [row[kl_metric] for _, row in points]
            ys = [row[key] for _, row in points]
            ax.plot(xs, ys, "-o", ms=5, label=method)
        ax.set_xlabel(f"KL(π‖π_ref) [{kl_metric}, completion tokens]")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = output_dir / filename
        fig.savefig(path, dpi=120)
        plt.close(fig)
        files[filename.removesuffix(".png")] = str(path)
    return files


def plot_demo(history: list[dict], bon_points: list[dict], reference: dict, path: str | Path, title: str = "") -> str:
    """The demo's figure: (left) reward vs exact KL(π‖π_ref) along training against the exact Best-of-N frontier;
    (right) exact KL(π‖π_BoN) for each N along training.

    Args:
        history: one dict per logged step with `step`, `reward`, `kl_ref` and `kl_to_bon{N}` keys.
        bon_points: one dict per N with `n`, `kl_ref`, `reward`.
        reference: `{"reward": …}` of π_ref.
    """
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.plot(
        [0.0] + [b["kl_ref"] for b in bon_points],
        [reference["reward"]] + [b["reward"] for b in bon_points],
        "k-o",
        ms=4,
        label="exact Best-of-N",
    )
    for b in bon_points:
        left.annotate(
            f"N={b['n']}", (b["kl_ref"], b["reward"]), textcoords="offset points", xytext=(4, -10), fontsize=8
        )
    left.plot([0.0], [reference["reward"]], "ks", ms=7, label="π_ref")
    scatter = left.scatter(
        [h["kl_ref"] for h in history],
        [h["reward"] for h in history],
        c=[h["step"] for h in history],
        cmap="viridis",
        s=14,
        zorder=3,
        label="J-BOND policy",
    )
    fig.colorbar(scatter, ax=left, label="step")
    left.set_xlabel("exact KL(π‖π_ref)")
    left.set_ylabel("exact expected reward")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    steps = [h["step"] for h in history]
    for b in bon_points:
        right.plot(steps, [h[f"kl_to_bon{b['n']}"] for h in history], label=f"KL(π‖π_BoN), N={b['n']}")
    right.set_yscale("log")
    right.set_xlabel("training step")
    right.set_ylabel("exact KL(π‖π_BoN)")
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)

"""Reward-vs-KL and win-rate-vs-KL plots (the papers' Pareto figures), with matplotlib's Agg backend.

`trl-bon plot results.json --log_x --xlim 0 5` redraws the figures of an evaluation (`trl_bon/scripts/plot.py`).

matplotlib is an optional dependency (`pip install 'trl-bon[plot]'`); everything else in trl-bon works without it.
"""

import math
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
#: Metrics whose value at π_ref is known exactly: π_ref against itself wins half of the time (ties count ½).
EXACT_AT_REFERENCE = {"win_rate_vs_ref": 0.5}


def reference_value(reference: dict, key: str) -> float:
    """π_ref's value of `key`: exact where it is known by definition, else the estimate in the results."""
    return EXACT_AT_REFERENCE.get(key, reference.get(key))


def trajectories(checkpoint_rows: list[dict]) -> dict[str, list[tuple[float, dict]]]:
    """`{method: [(step, row), …]}` in step order; `method@step` names share a method, other names are their own."""
    groups: dict[str, list] = {}
    for row in checkpoint_rows:
        method, step = _method_and_step(row["name"])
        groups.setdefault(method, []).append((step, row))
    for points in groups.values():
        points.sort(key=lambda point: point[0])
    return groups


def plot_pareto(
    results: dict,
    output_dir: str | Path,
    kl_metric: str = "kl_k1",
    metrics: tuple = PARETO_METRICS,
    log_x: bool = False,
    xlim: tuple[float | None, float | None] | None = None,
    ylim: dict[str, tuple[float | None, float | None]] | None = None,
) -> dict:
    """Draw one metric-vs-KL figure per `(key, y label, file name)` in `metrics` from an evaluation result dict.

    By default `reward_vs_kl.png` and `win_rate_vs_kl.png`; any key present in the checkpoint rows, the Best-of-N
    points and the reference works (e.g. an independent judge's score).

    Each method (checkpoints named `method@step`) is one trajectory that starts at π_ref (KL 0) and visits its
    checkpoints in step order; the markers are coloured by step (colour bar) and labelled with it, with error bars of
    one standard error wherever the results hold one (`<key>_sem`, `<kl_metric>_sem`). π_ref's win rate against itself
    is drawn at ½, its exact value. The Best-of-N curve is drawn at the bound log N − (N−1)/N (solid, the papers'
    convention, labelled with N) and at the Monte-Carlo estimate (dashed).

    Args:
        log_x: symmetric-log x axis (linear below the power of ten under the smallest positive KL, so π_ref at 0 stays
            on the plot; starting at 0 unless a point's KL estimate is negative); use it when one checkpoint's KL
            dwarfs the others.
        xlim: `(left, right)` of the KL axis; `None` in either place keeps matplotlib's choice.
        ylim: `{key: (bottom, top)}` per metric.

    Returns:
        `{file name without .png: path}`, e.g. `{"reward_vs_kl": path, "win_rate_vs_kl": path}`.
    """
    plt = _pyplot()
    from matplotlib.colors import Normalize

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    groups = trajectories(results["checkpoints"])
    steps = [step for points in groups.values() for step, _ in points if step != float("inf")]
    norm = Normalize(vmin=0, vmax=max(steps, default=1) or 1)
    bon, reference = results["bon"], results["reference"]
    files = {}
    for key, ylabel, filename in metrics:
        fig, ax = plt.subplots(figsize=(6.4, 4.8))
        ref_y = reference_value(reference, key)
        xs_all = [0.0]
        if bon:
            ys = [ref_y] + [b[key] for b in bon]
            ax.plot([0.0] + [b["kl_bound"] for b in bon], ys, "k-o", ms=4, label="Best-of-N (KL bound)")
            ax.plot([0.0] + [b["kl_estimate"] for b in bon], ys, "k--", alpha=0.5, label="Best-of-N (KL estimate)")
            _error_bars(ax, [b["kl_bound"] for b in bon], ys[1:], None, [b.get(f"{key}_sem", 0.0) for b in bon], "k")
            for b in bon:
                ax.annotate(
                    f"N={b['n']}", (b["kl_bound"], b[key]), textcoords="offset points", xytext=(4, -10), fontsize=8
                )
            xs_all += [b["kl_bound"] for b in bon]
        scatter, step_labels = None, []
        for index, (method, points) in enumerate(groups.items()):
            color = f"C{index}"
            xs = [0.0] + [row[kl_metric] for _, row in points]
            ys = [ref_y] + [row[key] for _, row in points]
            xs_all += xs
            ax.plot(xs, ys, "-", color=color, lw=1.5, label=method, zorder=2)
            xerr = [row.get(f"{kl_metric}_sem", 0.0) for _, row in points]
            _error_bars(ax, xs[1:], ys[1:], xerr, [row.get(f"{key}_sem", 0.0) for _, row in points], color)
            for (step, _), x, y in zip(points, xs[1:], ys[1:], strict=True):
                if step == float("inf"):  # a model without a step (a final save, a bare path): the method's colour
                    ax.scatter([x], [y], color=color, s=36, edgecolors="k", linewidths=0.5, zorder=3)
                    continue
                scatter = ax.scatter([x], [y], c=[step], cmap="viridis", norm=norm, s=36, edgecolors=color, zorder=3)
                label = ax.annotate(f"{step:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
                step_labels.append((step == points[-1][0], label))
        ax.plot([0.0], [ref_y], "ks", ms=7, label="π_ref", zorder=4)
        if key not in EXACT_AT_REFERENCE:
            _error_bars(ax, [0.0], [ref_y], None, [reference.get(f"{key}_sem", 0.0)], "k")
        if scatter is not None:
            from matplotlib.ticker import MaxNLocator

            colorbar = fig.colorbar(scatter, ax=ax, label="training step")
            colorbar.locator = MaxNLocator(integer=True)  # steps are whole numbers
            colorbar.update_ticks()
        if log_x:
            # linear up to the decade below the smallest positive KL, so π_ref at 0 stays on the plot and the ticks
            # fall on powers of ten; no empty negative side when every point has KL >= 0 (a k1 estimate can be < 0)
            linthresh = 10 ** math.floor(math.log10(min((x for x in xs_all if x > 0), default=1.0)))
            ax.set_xscale("symlog", linthresh=linthresh)
            if min(xs_all) >= 0:
                ax.set_xlim(left=-0.2 * linthresh)  # a margin that keeps π_ref's marker whole
        if xlim is not None:
            ax.set_xlim(*xlim)
        if ylim and key in ylim:
            ax.set_ylim(*ylim[key])
        ax.set_xlabel(f"KL(π‖π_ref) [{kl_metric}, completion tokens]")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        _hide_overlapping([label for _, label in sorted(step_labels, key=lambda item: not item[0])])  # last first
        path = output_dir / filename
        fig.savefig(path, dpi=150)
        plt.close(fig)
        files[filename.removesuffix(".png")] = str(path)
    return files


def _hide_overlapping(labels: list) -> None:
    """Hide each step label that would overlap one placed before it (pass the labels to keep first: last steps)."""
    if not labels:
        return
    renderer = labels[0].figure.canvas.get_renderer()
    placed = [text.get_window_extent(renderer) for text in labels[0].axes.texts if text not in labels]  # N=…
    for label in labels:
        box = label.get_window_extent(renderer)
        if any(box.overlaps(other) for other in placed):
            label.set_visible(False)
        else:
            placed.append(box)


def _error_bars(ax, xs: list, ys: list, xerr: list | None, yerr: list, color: str) -> None:
    """One-standard-error bars (`None` or 0: no bar in that direction)."""
    ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="none", ecolor=color, alpha=0.6, capsize=2, zorder=2)


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

"""Reward-vs-KL and win-rate-vs-KL plots (the papers' Pareto figures), each as `<name>.png` and `<name>.svg`.
matplotlib is an optional dependency (`pip install 'trl-bon[plot]'`)."""

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


# tab20 reordered: its strong shades first, then their light partners; no greys (Best-of-N and π_ref are black).
_TAB20_ORDER = (0, 2, 4, 6, 8, 10, 12, 16, 18, 1, 3, 5, 7, 9, 11, 13, 17, 19)
#: 13 markers against 18 colours (coprime): the first 234 methods get distinct (colour, marker) pairs.
METHOD_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*", "d")


def method_style(index: int) -> tuple[tuple[float, ...], str]:
    """`(RGB colour, marker)` of the `index`-th method in a figure."""
    from matplotlib import colormaps

    colours = colormaps["tab20"].colors
    return tuple(colours[_TAB20_ORDER[index % len(_TAB20_ORDER)]]), METHOD_MARKERS[index % len(METHOD_MARKERS)]


PARETO_METRICS = (
    ("reward", "mean reward (reward-model score)", "reward_vs_kl.png"),
    ("win_rate_vs_ref", "win rate vs π_ref (ties count ½)", "win_rate_vs_kl.png"),
)
#: Metrics whose value at π_ref is exact: π_ref against itself wins half of the time.
EXACT_AT_REFERENCE = {"win_rate_vs_ref": 0.5}
#: With at most this many methods each trajectory's first step is labelled too; beyond, only the last.
FIRST_STEP_LABELS_UP_TO = 4
#: Step labels sit on a half-transparent white box, to stay legible over error bars and lines.
LABEL_BACKGROUND = dict(boxstyle="round,pad=0.1", facecolor="white", edgecolor="none", alpha=0.75)


def _step_markers(ax, xs: list, ys: list, color, marker: str, linewidths: float = 0.4) -> None:
    """Markers growing and darkening with the step: no second colour scale to fight the method's colour."""
    ts = [i / (len(xs) - 1) if len(xs) > 1 else 1.0 for i in range(len(xs))]
    sizes = [14.0 + 50.0 * t for t in ts]
    colors = [(*color, 0.45 + 0.55 * t) for t in ts]
    ax.scatter(xs, ys, s=sizes, color=colors, marker=marker, edgecolors="k", linewidths=linewidths, zorder=3)


def plot_pareto(
    results: dict,
    output_dir: str | Path,
    kl_metric: str = "kl_k1",
    metrics: tuple = PARETO_METRICS,
    log_x: bool = False,
    xlim: tuple[float | None, float | None] | None = None,
    ylim: dict[str, tuple[float | None, float | None]] | None = None,
    title: str = "",
    methods: list[str] | None = None,
) -> dict:
    """Draw one metric-vs-KL figure (PNG and SVG) per `(key, y label, file name[, title])` in `metrics` from an
    evaluation result dict; return `{file name without .png: PNG path}`. docs/cli.md (`trl-bon plot`) describes the
    figure and the options.

    Args:
        ylim: `{key: (bottom, top)}` per metric; `None` in `xlim` or `ylim` keeps matplotlib's choice.
        methods: draw only these methods (`method` of `method@step`, or a whole name), in this order.
    """
    plt = _pyplot()
    from matplotlib.lines import Line2D

    groups: dict[str, list] = {}  # `{method: [(step, row), …]}`: `method@step` names share a method
    for row in results["checkpoints"]:
        method, _, step = row["name"].partition("@")
        try:
            step = float(step)
        except ValueError:  # no numeric step: last in its trajectory (`run@final`) or a method of its own (a name)
            method, step = (method if step else row["name"]), float("inf")
        groups.setdefault(method, []).append((step, row))
    groups = {method: sorted(points, key=lambda point: point[0]) for method, points in groups.items()}
    if methods is not None:
        missing = [method for method in methods if method not in groups]
        if missing:
            raise ValueError(f"No checkpoints of {missing} in the results; they hold {sorted(groups)}.")
        groups = {method: groups[method] for method in methods}
    bon, reference = results["bon"], results["reference"]
    ranges = {(points[0][0], points[-1][0]) for points in groups.values() if points[-1][0] != float("inf")}
    span = " ({:g} → {:g})".format(*next(iter(ranges))) if len(ranges) == 1 else ""
    labelled = "first and last" if len(groups) <= FIRST_STEP_LABELS_UP_TO else "last"
    legend_title = f"marker size: training step{span}\nlabels: {labelled} step, where there is room"
    files = {}
    for key, ylabel, filename, *own_title in metrics:
        bounds = (0.0, 1.0) if "win_rate" in key else (-math.inf, math.inf)
        fig, ax = plt.subplots(figsize=(8.4, 4.8), layout="constrained")
        ref_y = EXACT_AT_REFERENCE.get(key, reference.get(key))
        bon_xs = [b["kl_bound"] for b in bon]
        xs_all, fixed_labels = [0.0, *bon_xs], []
        if bon:
            ys = [ref_y] + [b[key] for b in bon]
            ax.plot([0.0, *bon_xs], ys, "k-o", ms=4, label="Best-of-N (KL bound)")
            if all("kl_estimate" in b for b in bon):  # a table rebuilt from printed bounds may not have it
                ax.plot([0.0] + [b["kl_estimate"] for b in bon], ys, "k--", alpha=0.5, label="Best-of-N (KL estimate)")
            _error_bars(ax, bon_xs, ys[1:], bon, key, "k", bounds)
            # N above-left of each point: the region over the Best-of-N curve is where trained policies rarely go
            fixed_labels = [
                ax.annotate(f"N={b['n']}", (x, y), textcoords="offset points", xytext=(-5, 5), ha="right", fontsize=8)
                for b, x, y in zip(bon, bon_xs, ys[1:], strict=True)
            ]
        last_labels, first_labels, legend_handles = [], [], {}
        for index, (method, points) in enumerate(groups.items()):
            color, marker = method_style(index)
            xs = [0.0] + [row[kl_metric] for _, row in points]
            ys = [ref_y] + [row[key] for _, row in points]
            xs_all += xs
            ax.plot(xs, ys, "-", color=color, lw=1.4, alpha=0.8, zorder=2, label=method)
            _error_bars(ax, xs[1:], ys[1:], [row for _, row in points], key, color, bounds, x_key=kl_metric)
            _step_markers(ax, xs[1:], ys[1:], color, marker)
            # the legend shows the method's line with its marker at full size
            legend_handles[method] = Line2D([], [], color=color, marker=marker, ms=6, mec="k", mew=0.4)
            stepped = [(i, step) for i, (step, _) in enumerate(points) if step != float("inf")]
            for rank, (i, step) in enumerate(stepped):  # the marker size carries the steps without a label
                last = rank == len(stepped) - 1
                if last or rank == 0 and len(groups) <= FIRST_STEP_LABELS_UP_TO:
                    label = ax.annotate(
                        f"{step:g}", (xs[i + 1], ys[i + 1]), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=color, zorder=5, bbox=LABEL_BACKGROUND, in_layout=False,
                    )  # fmt: skip
                    (last_labels if last else first_labels).append(label)
        ax.plot([0.0], [ref_y], "ks", ms=7, label="π_ref", zorder=4)
        if key not in EXACT_AT_REFERENCE:
            _error_bars(ax, [0.0], [ref_y], [reference], key, "k", bounds)
        if log_x:
            # linear up to the decade below the smallest positive KL, so π_ref at 0 stays on the plot and the ticks
            # fall on powers of ten; no empty negative side when every point has KL >= 0 (a k1 estimate can be < 0)
            linthresh = 10 ** math.floor(math.log10(min((x for x in xs_all if x > 0), default=1.0)))
            ax.set_xscale("symlog", linthresh=linthresh)
            if min(xs_all) >= 0:
                ax.set_xlim(left=-0.2 * linthresh)  # a margin that keeps π_ref's marker whole
        if xlim is not None:
            ax.set_xlim(*xlim)
        if (ylim or {}).get(key):
            ax.set_ylim(*ylim[key])
        estimator = kl_metric.removeprefix("kl_")
        ax.set(xlabel=f"KL(π‖π_ref) [nats; {estimator} estimate, summed over completion tokens]", ylabel=ylabel)
        name = ylabel.split(" (")[0]
        heading = own_title[0] if own_title else f"{name[0].upper()}{name[1:]} against KL to π_ref"
        ax.set_title(heading, fontsize=11, pad=18 if _effective_n_axis(ax) else 6)
        if title:
            fig.suptitle(title, fontsize=12)
        ax.grid(alpha=0.3)
        handles, names = ax.get_legend_handles_labels()
        handles = [legend_handles.get(name, handle) for handle, name in zip(handles, names, strict=True)]
        # with trajectories, the legend goes right of the axes and explains the step markers in its title
        outside = dict(title=legend_title, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        ax.legend(handles, names, fontsize=8, title_fontsize=7, **(outside if groups else {"loc": "best"}))
        fig.canvas.draw()  # lay the figure out, so that the labels' boxes are final
        _hide_overlapping(last_labels + first_labels, fixed_labels)  # last steps first: they are kept on overlaps
        files[filename.removesuffix(".png")] = _save(fig, Path(output_dir) / filename, dpi=150)
    return files


def _effective_n_axis(ax) -> bool:
    """Marks along the top edge at the Best-of-N KL bound of each N = 2, 4, 8, … in view (effective N,
    docs/metrics.md), in data coordinates along x: a secondary axis would not follow the symlog scale."""
    low, high = ax.get_xlim()
    edge = ax.get_xaxis_transform()  # x in data coordinates, y in axes coordinates
    last = None  # the previous mark, in axes fractions (which a later resizing of the axes leaves as they are)
    for n in (2**k for k in range(1, 13)):
        x = math.log(n) - (n - 1) / n  # `core.bon_kl_bound`, restated: importing `core` would pull torch
        fraction = ax.transAxes.inverted().transform(ax.transData.transform((x, 0.0)))[0]
        if low <= x <= high and (last is None or fraction - last >= 0.09):  # on a log axis the large N would crowd
            ax.plot([x, x], [1.0, 1.015], color="0.3", lw=0.8, transform=edge, clip_on=False)
            ax.text(x, 1.02, f"N={n}", transform=edge, ha="center", va="bottom", fontsize=7, color="0.3")
            last = fraction
    if last is not None:
        ax.set_xlabel(ax.get_xlabel() + "\nmarks on top: the Best-of-N of that KL (effective N, N_KL)")
    return last is not None


def _sem(row: dict, key: str) -> float:
    """`row[f"{key}_sem"]`, 0 where absent or NaN (one sample has no standard error)."""
    value = row.get(f"{key}_sem")
    return 0.0 if value is None or not math.isfinite(value) else float(value)


def _save(fig, path: Path, dpi: int) -> str:
    """Write `path` (PNG) and an SVG beside it, close the figure, return the PNG's path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    fig.savefig(path.with_suffix(".svg"))
    plt.close(fig)
    return str(path)


def _hide_overlapping(labels: list, fixed: list = (), avoid_markers: bool = True) -> None:
    """Hide each label that would overlap a `fixed` one, an earlier label or, with `avoid_markers`, a marker."""
    if not labels:
        return
    from matplotlib.collections import PathCollection
    from matplotlib.transforms import Bbox

    ax = labels[0].axes
    placed = [text.get_window_extent() for text in fixed]  # the figure is drawn: the boxes are final
    markers = []  # (data point, display box) of every scattered marker
    for collection in ax.collections:
        scattered = avoid_markers and isinstance(collection, PathCollection)  # markers, not error bars
        sizes = collection.get_sizes() if scattered else []
        for i, point in enumerate(collection.get_offsets() if len(sizes) else []):
            radius = math.sqrt(sizes[i % len(sizes)]) / 2 * ax.figure.dpi / 72
            x, y = ax.transData.transform(point)
            markers.append((tuple(point), Bbox.from_extents(x - radius, y - radius, x + radius, y + radius)))
    for label in labels:
        box = label.get_window_extent()
        others = [marker for point, marker in markers if point != tuple(label.xy)]
        if any(box.overlaps(other) for other in placed + others):
            label.set_visible(False)
        else:
            placed.append(box)


def clipped_errors(values: list, errors: list, lower: float, upper: float) -> list[list[float]]:
    """`[below, above]` bar lengths for `errors` around `values`, cut so that no bar leaves [lower, upper]; a value
    already outside (a k1 KL estimate can be negative) gets no bar on that side."""
    pairs = list(zip(values, errors, strict=True))
    return [[max(0.0, min(e, v - lower)) for v, e in pairs], [max(0.0, min(e, upper - v)) for v, e in pairs]]


def _error_bars(ax, xs: list, ys: list, rows: list, key: str, color, y_bounds: tuple, x_key: str | None = None):
    """One-standard-error bars of the rows' `key` (and KL `x_key`); KL bars stop at 0, y bars at `y_bounds`."""
    xerr = None if x_key is None else clipped_errors(xs, [_sem(row, x_key) for row in rows], 0.0, math.inf)
    yerr = clipped_errors(ys, [_sem(row, key) for row in rows], *y_bounds)
    ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="none", ecolor=color, alpha=0.6, capsize=2, zorder=2)


def plot_demo(history: list[dict], bon_points: list[dict], reference: dict, path: str | Path, title: str = "") -> str:
    """The demo's figure (PNG and SVG): reward vs exact KL(π‖π_ref) against the exact Best-of-N points, and exact
    KL(π‖π_BoN) for each N, along training (`history` rows: `step`, `reward`, `kl_ref`, `kl_to_bon{N}`)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    bon_xs = [0.0] + [b["kl_ref"] for b in bon_points]
    left.plot(bon_xs, [reference["reward"]] + [b["reward"] for b in bon_points], "k-o", ms=4, label="exact Best-of-N")
    fixed = [
        left.annotate(
            f"N={b['n']}", (b["kl_ref"], b["reward"]), textcoords="offset points", xytext=(4, -11), fontsize=8
        )
        for b in bon_points
    ]
    left.plot([0.0], [reference["reward"]], "ks", ms=7, label="π_ref", zorder=4)
    color, marker = method_style(0)
    xs, ys = [h["kl_ref"] for h in history], [h["reward"] for h in history]
    left.plot(xs, ys, "-", color=color, lw=1.2, zorder=2)
    _step_markers(left, xs, ys, color, marker, 0.3)
    left.plot([], [], "-", color=color, marker=marker, mec="k", mew=0.3, label="J-BOND policy (marker size: step)")
    trained = [h["step"] for h in history if h["step"] > 0]
    labelled = set(trained[::-1][:: max(1, round(len(trained) / 4))])  # about four labels, the last step's included
    style = dict(textcoords="offset points", xytext=(-14, 10), fontsize=7, color=color, ha="right")
    style["arrowprops"] = {"arrowstyle": "-", "lw": 0.5, "color": color}  # a leader line to the marker
    labels = [  # last steps first: they are kept where labels overlap
        left.annotate(f"step {h['step']}", (h["kl_ref"], h["reward"]), **style)
        for h in reversed(history)
        if h["step"] in labelled
    ]
    left.set(xlabel="exact KL(π‖π_ref) [nats]", ylabel="exact expected reward")
    left.set_title("Reward against KL to π_ref", fontsize=11)
    left.grid(alpha=0.3)
    left.legend(fontsize=8, loc="lower right")
    steps = [h["step"] for h in history]
    every = max(1, len(steps) // 10)  # about ten markers per line
    for index, b in enumerate(bon_points):
        n_color, n_marker = method_style(index + 1)
        kls = [h[f"kl_to_bon{b['n']}"] for h in history]
        right.plot(steps, kls, "-", color=n_color, marker=n_marker, ms=4, markevery=every, label=f"N = {b['n']}")
    right.set(yscale="log", xlabel="training step", ylabel="exact KL(π‖π_BoN) [nats]")
    right.set_title("Distance to each Best-of-N law", fontsize=11)
    right.grid(alpha=0.3)
    right.legend(fontsize=8, title="Best-of-N target", title_fontsize=8)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.canvas.draw()
    # the demo's markers sit every 10 steps, packed at the end: its step labels (leader lines) only avoid each other
    _hide_overlapping(labels, fixed, avoid_markers=False)
    return _save(fig, path, dpi=120)

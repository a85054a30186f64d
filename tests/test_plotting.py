"""Paper-ready evaluation figures (`trl_bon.plotting.plot_pareto`), checked on a synthetic `results.json`."""

import json

import pytest


pytest.importorskip("matplotlib")


def results() -> dict:
    def row(name, kl, reward, win):
        return {"name": name, "kl_k1": kl, "kl_k1_sem": 0.1, "reward": reward, "reward_sem": 0.05,
                "win_rate_vs_ref": win}  # fmt: skip

    return {
        # deliberately out of step order, with a noisy KL that would zigzag if joined in listing order
        "checkpoints": [row("jbond@20", 0.9, 1.5, 0.7), row("jbond@10", 1.1, 1.2, 0.6), row("sft", 0.5, 1.0, 0.55)],
        "reference": {"reward": 0.8, "reward_sem": 0.05, "win_rate_vs_ref": 0.63},
        "bon": [
            {"n": 2, "kl_bound": 0.19, "kl_estimate": 0.2, "reward": 1.1, "win_rate_vs_ref": 0.75},
            {"n": 4, "kl_bound": 0.64, "kl_estimate": 0.6, "reward": 1.4, "win_rate_vs_ref": 0.87},
        ],
    }


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures `plot_pareto` draws, kept open for inspection."""
    import matplotlib.pyplot as plt

    kept, close = [], plt.close
    monkeypatch.setattr(plt, "close", kept.append)
    yield kept
    for fig in kept:
        close(fig)


def test_trajectories_start_at_reference_in_step_order(tmp_path, figures):
    from trl_bon.plotting import plot_pareto

    files = plot_pareto(results(), tmp_path)
    assert set(files) == {"reward_vs_kl", "win_rate_vs_kl"}
    reward_ax, win_ax = (fig.axes[0] for fig in figures)
    lines = {line.get_label(): line for line in reward_ax.get_lines()}
    assert list(lines["jbond"].get_xdata()) == [0.0, 1.1, 0.9]  # π_ref, step 10, step 20
    assert list(lines["jbond"].get_ydata()) == [0.8, 1.2, 1.5]
    assert list(lines["sft"].get_xdata()) == [0.0, 0.5]
    win = {line.get_label(): line for line in win_ax.get_lines()}
    assert win["π_ref"].get_ydata()[0] == 0.5  # exact, not the noisy 0.63
    assert win["jbond"].get_ydata()[0] == 0.5 and win["Best-of-N (KL bound)"].get_ydata()[0] == 0.5
    texts = {t.get_text() for t in reward_ax.texts}
    assert {"N=2", "N=4", "10", "20"} <= texts  # Best-of-N labelled with N, checkpoints with their step
    assert len(reward_ax.collections) >= 3  # error bars and step-sized markers
    # the step is the markers' size, not a second colour scale: no colour bar, the legend says how to read it
    assert len(figures[0].axes) == 1
    assert "training step (10 → 20)" in reward_ax.get_legend().get_title().get_text()


def _vertical_bars(ax) -> set[tuple]:
    """`(x, bottom, top)` of every vertical error bar, rounded."""
    from matplotlib.collections import LineCollection

    return {
        tuple(round(float(v), 6) for v in (seg[0][0], seg[0][1], seg[1][1]))
        for c in ax.collections
        if isinstance(c, LineCollection)
        for seg in c.get_segments()
        if seg[0][0] == seg[1][0]
    }


def test_error_bars_on_best_of_n_and_reference_and_step_colours(tmp_path, figures):
    from matplotlib.colors import to_rgba

    from trl_bon.plotting import plot_pareto

    data = results()
    data["bon"][0]["reward_sem"] = 0.04
    plot_pareto(data, tmp_path)
    reward_ax, win_ax = (fig.axes[0] for fig in figures)
    bars = _vertical_bars(reward_ax)
    assert (0.19, 1.06, 1.14) in bars  # Best-of-N's standard error, at its KL bound
    assert (0.0, 0.75, 0.85) in bars  # π_ref's estimated reward has one
    assert not any(x == 0.0 for x, *_ in _vertical_bars(win_ax))  # its win rate, ½, is exact: none
    # a model without a step (`sft`) is drawn in its method's colour, not as the colour bar's last step
    sft = [c for c in reward_ax.collections if c.get_offsets().tolist() == [[0.5, 1.0]]]
    assert len(sft) == 1 and sft[0].get_array() is None
    assert tuple(sft[0].get_facecolor()[0]) == to_rgba("C1")
    # jbond's markers grow and darken with the step, in its own colour (C0's blue) at every step
    jbond = next(c for c in reward_ax.collections if c.get_offsets().tolist() == [[1.1, 1.2], [0.9, 1.5]])
    assert list(jbond.get_sizes()) == [14.0, 64.0]
    assert [tuple(f[:3]) for f in jbond.get_facecolor()] == [to_rgba("C0")[:3]] * 2
    assert [f[3] for f in jbond.get_facecolor()] == [0.45, 1.0]


def test_log_x_and_limits(tmp_path, figures):
    from trl_bon.plotting import plot_pareto

    plot_pareto(results(), tmp_path, log_x=True, xlim=(0, 5), ylim={"reward": (0, 2)})
    reward_ax, win_ax = (fig.axes[0] for fig in figures)
    assert reward_ax.get_xscale() == "symlog" and reward_ax.get_xlim() == (0, 5)
    assert reward_ax.get_ylim() == (0, 2) and win_ax.get_ylim() != (0, 2)


def test_log_x_starts_at_reference_with_decade_ticks(tmp_path, figures):
    from trl_bon.plotting import plot_pareto

    data = results()
    data["checkpoints"][2]["kl_k1_sem"] = 0.9  # an error bar that reaches below 0 does not open a negative side
    plot_pareto(data, tmp_path, log_x=True)
    reward_ax = figures[0].axes[0]
    assert reward_ax.get_xlim()[0] == pytest.approx(-0.02)  # 0 and a margin for π_ref's marker
    assert reward_ax.xaxis.get_transform().linthresh == pytest.approx(0.1)  # smallest positive KL 0.19 → 10⁻¹
    data["checkpoints"][2]["kl_k1"] = -0.05  # a negative k1 estimate stays visible
    plot_pareto(data, tmp_path, log_x=True)
    assert figures[2].axes[0].get_xlim()[0] < -0.05


def test_plot_command_redraws_from_results_json(tmp_path, capsys):
    from trl_bon.scripts.cli import main

    (tmp_path / "results.json").write_text(json.dumps(results()))
    assert main(["plot", str(tmp_path / "results.json"), "--log_x", "--xlim", "0", "3"]) == 0
    assert (tmp_path / "reward_vs_kl.png").read_bytes()[:4] == b"\x89PNG"
    assert "win_rate_vs_kl" in capsys.readouterr().out


def test_overlapping_step_labels_keep_the_last_step(tmp_path, figures):
    from trl_bon.plotting import plot_pareto

    data = results()
    data["checkpoints"][0].update(kl_k1=1.1, reward=1.2005)  # jbond@20 lands on jbond@10
    plot_pareto(data, tmp_path)
    visible = {t.get_text() for t in figures[0].axes[0].texts if t.get_visible()}
    assert "20" in visible and "10" not in visible
    assert {"N=2", "N=4"} <= visible
    plot_pareto(results(), tmp_path)  # apart: both labelled
    assert {"10", "20"} <= {t.get_text() for t in figures[2].axes[0].texts if t.get_visible()}


def many_variants(count: int) -> dict:
    """`count` methods of four checkpoints each, crowded into the same KL range, like the convergence benchmark's."""
    data = results()
    data["checkpoints"] = [
        {"name": f"method{i}@{step}", "kl_k1": 0.1 * k + 0.01 * i, "kl_k1_sem": 0.3, "reward": 1.0 + 0.02 * i,
         "reward_sem": 0.05, "win_rate_vs_ref": 0.55, "win_rate_vs_ref_sem": 0.6}
        for i in range(count)
        for k, step in enumerate((75, 150, 225, 300), start=1)
    ]  # fmt: skip
    return data


def test_every_variant_has_its_own_colour_and_marker(tmp_path, figures):
    """The convergence benchmark draws 13 variants; matplotlib's 10-colour cycle gave two pairs of them one colour."""
    from matplotlib.colors import to_rgb

    from trl_bon.plotting import method_style, plot_pareto

    assert len({method_style(i)[0] for i in range(18)}) == 18  # 18 colours before any repeats
    assert len({method_style(i) for i in range(234)}) == 234  # and (colour, marker) pairs far beyond
    assert all(to_rgb(method_style(i)[0]) != (0.0, 0.0, 0.0) for i in range(18))  # black is Best-of-N's and π_ref's
    plot_pareto(many_variants(13), tmp_path)
    legend = figures[0].axes[0].get_legend()
    styles = {
        text.get_text(): (to_rgb(handle.get_color()), handle.get_marker())
        for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True)
        if text.get_text().startswith("method")
    }
    assert len(styles) == 13
    assert len({colour for colour, _ in styles.values()}) == 13
    assert len({marker for _, marker in styles.values()}) == 13
    assert all(marker not in ("None", "", None) for _, marker in styles.values())


def _horizontal_bars(ax) -> list[tuple]:
    """`(left, right)` of every horizontal error bar."""
    from matplotlib.collections import LineCollection

    return [
        (float(seg[0][0]), float(seg[1][0]))
        for c in ax.collections
        if isinstance(c, LineCollection)
        for seg in c.get_segments()
        if seg[0][1] == seg[1][1] and seg[0][0] != seg[1][0]
    ]


def test_kl_error_bars_stop_at_zero_and_win_rate_bars_in_the_unit_interval(tmp_path, figures):
    from trl_bon.plotting import clipped_errors, plot_pareto

    assert clipped_errors([0.1, 2.0, -0.05], [0.3, 0.3, 0.3], 0.0, float("inf")) == [[0.1, 0.3, 0.0], [0.3, 0.3, 0.3]]
    plot_pareto(many_variants(3), tmp_path)  # KL standard errors of 0.3 at KL 0.1: a bar would reach −0.2
    for fig in figures:
        bars = _horizontal_bars(fig.axes[0])
        assert bars and min(left for left, _ in bars) == pytest.approx(0.0)
        assert all(left >= 0 for left, _ in bars)
    win_bars = _vertical_bars(figures[1].axes[0])  # win rate 0.55 ± 0.6 would span −0.05 … 1.15
    assert win_bars and all(0.0 <= bottom and top <= 1.0 for _, bottom, top in win_bars)


def test_figures_have_titles_units_and_an_svg_beside_each_png(tmp_path, figures):
    from trl_bon.plotting import plot_pareto

    files = plot_pareto(results(), tmp_path, title="kit, 48 steps")
    for name, png in files.items():
        assert png.endswith(f"{name}.png")
        assert (tmp_path / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    reward_ax, win_ax = (fig.axes[0] for fig in figures)
    assert reward_ax.get_title() == "Mean reward against KL to π_ref"
    assert win_ax.get_title() == "Win rate vs π_ref against KL to π_ref"
    assert figures[0].get_suptitle() == "kit, 48 steps"
    assert "[nats" in reward_ax.get_xlabel()


def test_many_variants_label_only_their_last_step(tmp_path, figures):
    from trl_bon.plotting import plot_pareto

    plot_pareto(many_variants(13), tmp_path)
    labels = [t.get_text() for t in figures[0].axes[0].texts if not t.get_text().startswith("N=")]
    assert labels == ["300"] * 13  # drawn once per variant (overlapping ones are then hidden), never "75"


def test_demo_figure_has_titles_units_and_an_svg(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from trl_bon.plotting import plot_demo

    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    history = [
        {"step": s, "reward": 2.5 + s / 100, "kl_ref": s / 200, "kl_to_bon2": 0.2 / (1 + s), "kl_to_bon4": 1 / (1 + s)}
        for s in range(0, 110, 10)
    ]
    bon = [{"n": 2, "kl_ref": 0.18, "reward": 3.6}, {"n": 4, "kl_ref": 0.6, "reward": 4.4}]
    path = plot_demo(history, bon, {"reward": 2.56}, tmp_path / "demo.png", title="demo")
    assert path == str(tmp_path / "demo.png") and (tmp_path / "demo.svg").is_file()
    left, right = kept[0].axes
    assert left.get_title() and right.get_title() and kept[0].get_suptitle() == "demo"
    assert "[nats]" in left.get_xlabel() and "[nats]" in right.get_ylabel()
    colours = [line.get_color() for line in right.get_lines()]
    assert len(set(colours)) == 2 and all(line.get_marker() not in ("None", None) for line in right.get_lines())
    assert len(kept[0].axes) == 2  # no colour bar


def test_best_of_n_without_a_kl_estimate_draws_the_bound_only(tmp_path, figures):
    from trl_bon.plotting import plot_pareto

    data = results()
    for b in data["bon"]:
        del b["kl_estimate"]
    plot_pareto(data, tmp_path)
    labels = [line.get_label() for line in figures[0].axes[0].get_lines()]
    assert "Best-of-N (KL bound)" in labels and "Best-of-N (KL estimate)" not in labels


def test_methods_selects_and_orders_trajectories(tmp_path, figures):
    from trl_bon.plotting import plot_pareto

    plot_pareto(results(), tmp_path, methods=["sft", "jbond"])
    legend = [t.get_text() for t in figures[0].axes[0].get_legend().get_texts()]
    assert legend[2:4] == ["sft", "jbond"]  # after the two Best-of-N lines
    plot_pareto(results(), tmp_path, methods=["sft"])
    assert "jbond" not in [line.get_label() for line in figures[2].axes[0].get_lines()]
    with pytest.raises(ValueError, match=r"No checkpoints of \['vbon'\].*\['jbond', 'sft'\]"):
        plot_pareto(results(), tmp_path, methods=["vbon"])


def test_effective_n_marks_sit_at_the_best_of_n_kl_on_any_scale():
    """The top marks read the KL axis as effective N: each `N=n` sits at log n − (n − 1)/n in data coordinates, on a
    symlog axis too, and only the N whose KL is in view are marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trl_bon.core import bon_kl_bound
    from trl_bon.plotting import _effective_n_axis

    fig, ax = plt.subplots()
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlim(-0.02, 1.3)
    ax.set_xlabel("KL")
    assert _effective_n_axis(ax)
    marks = {text.get_text(): text.get_position()[0] for text in ax.texts}
    assert marks == {"N=2": bon_kl_bound(2), "N=4": bon_kl_bound(4), "N=8": bon_kl_bound(8)}  # N=16 is at 1.77
    assert "effective N" in ax.get_xlabel()
    plt.close(fig)
    fig, ax = plt.subplots()
    ax.set_xlim(0.0, 0.1)
    assert not _effective_n_axis(ax) and not ax.texts  # no Best-of-N (N >= 2) has KL < 0.19
    plt.close(fig)

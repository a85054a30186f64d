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

    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    return kept


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
    assert len(reward_ax.collections) >= 3  # error bars and step-coloured markers
    assert figures[0].axes[-1].get_ylabel() == "training step"  # the colour bar


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
    colorbar = figures[0].axes[-1]
    ticks = [t for t in colorbar.get_yticks() if 0 <= t <= 20]
    assert ticks and all(float(t).is_integer() for t in ticks)  # training steps are whole numbers


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

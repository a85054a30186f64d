"""The pure helpers of benchmarks/replication.py (the runs themselves need the prepared cache and hours of CPU)."""

import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def replication():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "replication.py"
    spec = importlib.util.spec_from_file_location("replication_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_set_overrides_a_size_without_touching_it(replication):
    cpu = replication.SIZES["cpu"]
    cfg = replication.apply_overrides(cpu, ["lr=1e-3", "vbon_ns=4", "rloo_betas=0.05,0.2", "rl_steps=80"])
    assert cfg["lr"] == 1e-3 and cfg["vbon_ns"] == (4,) and cfg["rloo_betas"] == (0.05, 0.2) and cfg["rl_steps"] == 80
    assert cpu["lr"] == 1e-4 and cpu["vbon_ns"] == (4, 8)  # the size itself is unchanged
    assert replication.apply_overrides(cpu, ["lr=1"])["lr"] == 1  # an int is a valid float setting


@pytest.mark.parametrize(
    ("item", "message"),
    [("lrr=1", "KEY one of"), ("lr", "KEY one of"), ("rl_steps=1.5", "takes a int"), ("lr=fast", "not a number")],
)
def test_set_rejects_bad_overrides(replication, item, message):
    with pytest.raises(SystemExit, match=message):
        replication.apply_overrides(replication.SIZES["cpu"], [item])


def test_tag_names_runs_and_methods(replication):
    args = replication.parse_args(["--tag", "lr1e-3"])
    assert replication.named(args, "vbon_n4") == "vbon_n4-lr1e-3"
    assert replication.named(replication.parse_args([]), "vbon_n4") == "vbon_n4"


def test_pareto_front_keeps_only_non_dominated_points(replication):
    points = [
        {"name": "ref", "kl": 0.0, "reward": 0.0},
        {"name": "a", "kl": 0.5, "reward": 1.0},
        {"name": "dominated", "kl": 0.6, "reward": 0.9},
        {"name": "tie-worse-kl", "kl": 0.7, "reward": 1.0},
        {"name": "b", "kl": 1.0, "reward": 2.0},
    ]
    assert [p["name"] for p in replication.pareto_front(points, "reward")] == ["ref", "a", "b"]


def test_report_needs_a_finished_run(replication, tmp_path):
    cache = tmp_path / "cache"
    for step in ("policy", "prompts", "reward", "judge"):
        (cache / "steps").mkdir(parents=True, exist_ok=True)
        (cache / "steps" / f"{step}.json").write_text("{}")
    with pytest.raises(SystemExit, match="run without --report first"):
        replication.main(["--cache-dir", str(cache), "--output-dir", str(tmp_path / "out"), "--report"])

"""`evaluate_checkpoints` (docs/maths.md §7) on the one-token task, where the exact values are known (the per-sample
maths is tested in tests/core/test_metrics.py) (a policy set to π_BoN2 must look like Best-of-2)."""

import csv
import json

import pytest
import torch

from trl_bon.core.bon_law import bon_probs


def _policy_with_probs(task, probs):
    """The one-token model with its LM head solved so that its next-token softmax after the prompt is `probs`."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(task.model_path).eval()
    with torch.no_grad():
        hidden = model.model(input_ids=torch.tensor([[0]])).last_hidden_state[0, -1].double()
        model.lm_head.weight.copy_((torch.outer(probs.log(), hidden) / hidden.dot(hidden)).float())
    return model


@pytest.mark.slow
def test_evaluate_checkpoints_on_the_one_token_task(one_token_task, tmp_path):
    from trl_bon.evaluation import EvalOptions, evaluate_checkpoints
    from trl_bon.sampling import GenerationSettings, Sampler

    task = one_token_task
    bon2 = bon_probs(task.ref_probs, task.rewards, 2)
    policy = _policy_with_probs(task, bon2)
    assert torch.allclose(task.policy_probs(policy), bon2, atol=1e-5)
    results = evaluate_checkpoints(
        {"reference": task.model_path, "bon2@1": policy},
        [task.prompt] * 400,
        task.reward_func,
        Sampler(task.model_path, GenerationSettings(max_completion_length=1), progress=False),
        EvalOptions(bon_ns=(2, 4), num_reference_samples=24, output_dir=tmp_path),
    )
    ref_row, bon_row = results.checkpoints
    # π_ref evaluated against itself: exactly zero KL, win rate 1/2 and BoN_N win rates below 1/2.
    assert ref_row["kl_k1"] == 0.0 and ref_row["kl_k3"] == 0.0
    assert ref_row["win_rate_vs_ref"] == pytest.approx(0.5, abs=0.04)
    assert ref_row["win_rate_vs_bon2"] < 0.45
    # A policy equal to π_BoN2: KL to π_ref ≈ 0.178, reward ≈ 3.586, win rate vs BoN2 ≈ 1/2,
    # win rate vs π_ref ≈ 0.658, and a small KL to π_BoN2 in both directions (MC-estimated quantiles).
    assert bon_row["kl_k1"] == pytest.approx(0.178227, abs=0.08)
    assert bon_row["kl_k3"] == pytest.approx(0.178227, abs=0.08)
    assert bon_row["reward"] == pytest.approx(3.5858, abs=0.25)
    assert bon_row["win_rate_vs_bon2"] == pytest.approx(0.5, abs=0.08)
    assert bon_row["win_rate_vs_ref"] == pytest.approx(0.657835, abs=0.05)
    assert abs(bon_row["kl_to_bon2_backward"]) < 0.12
    assert abs(bon_row["kl_to_bon2_forward"]) < 0.12
    assert bon_row["kl_to_bon4_backward"] > bon_row["kl_to_bon2_backward"]
    # Best-of-N reference points: sampled from the reference samples, close to the exact law.
    points = {b["n"]: b for b in results.bon}
    assert points[2]["reward"] == pytest.approx(3.5858, abs=0.25)
    assert points[4]["reward"] == pytest.approx(4.4052, abs=0.2)
    assert points[4]["kl_bound"] == pytest.approx(0.636294, abs=1e-6)
    assert points[4]["kl_estimate"] == pytest.approx(0.595834, abs=0.15)
    # Effective N (docs/metrics.md): w/(1 − w) of the row's win rate, the inverse KL law of its k1 KL; π_ref reads 1.
    for row in (ref_row, bon_row):
        assert row["effective_n_win"] == pytest.approx(
            row["win_rate_vs_ref"] / (1 - row["win_rate_vs_ref"]), rel=1e-12
        )
        assert row["effective_n_kl"] == pytest.approx(_n_kl(row["kl_k1"]), rel=1e-12)
    assert ref_row["effective_n_kl"] == 1.0
    # The exact BoN2 law of this 6-outcome task has ties (two draws of one outcome), so N_win reads below 2:
    # exact win rate 0.657835 → 1.922567 (docs/metrics.md, the discrete caveat).
    assert bon_row["effective_n_win"] == pytest.approx(1.922567, abs=0.45)
    assert points[4]["effective_n_kl"] == pytest.approx(_n_kl(points[4]["kl_estimate"]), rel=1e-12)
    assert results.reference["effective_n_win"] == pytest.approx(1.0, abs=0.2)
    # Files: JSON, CSV with one row per checkpoint / BoN point / π_ref, non-empty PNGs.
    data = json.loads((tmp_path / "results.json").read_text())
    assert [c["name"] for c in data["checkpoints"]] == ["reference", "bon2@1"]
    assert {"effective_n_win", "effective_n_kl"} <= set(data["checkpoints"][1]) & set(data["bon"][0])
    with open(tmp_path / "results.csv") as f:
        assert [row["kind"] for row in csv.DictReader(f)] == ["reference", "bon", "bon", "checkpoint", "checkpoint"]
    for name in ("reward_vs_kl.png", "win_rate_vs_kl.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _n_kl(kl):
    from trl_bon.core import effective_n_from_kl

    return effective_n_from_kl(torch.tensor(kl, dtype=torch.float64)).item()


def test_eval_options_reject_bad_counts():
    from trl_bon.evaluation import EvalOptions

    with pytest.raises(ValueError, match="must exceed the largest N"):
        EvalOptions(bon_ns=(2, 16), num_reference_samples=16)
    with pytest.raises(ValueError, match="`num_policy_samples` must be at least 1, got 0"):
        EvalOptions(num_policy_samples=0)
    with pytest.raises(ValueError, match="N >= 2"):
        EvalOptions(bon_ns=(1, 4))


def test_plotting_import_error_names_the_fix(monkeypatch):
    import builtins

    from trl_bon import plotting

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"trl-bon\[plot\]"):
        plotting._pyplot()


class CountingJudge:
    """A reward callable that records how often it is called (to show errors come before any sampling)."""

    def __init__(self, scale: float, table):
        self.scale, self.table, self.calls = scale, table, 0

    def __call__(self, completion_ids, **kwargs):
        self.calls += 1
        return [self.scale * float(self.table[ids[0]]) for ids in completion_ids]


@pytest.fixture(scope="module")
def one_token_sampler(one_token_task):
    from trl_bon.sampling import GenerationSettings, Sampler

    return Sampler(one_token_task.model_path, GenerationSettings(max_completion_length=1), progress=False)


def test_reference_and_bon_alone_with_a_judge(one_token_task, one_token_sampler, tmp_path):
    from trl_bon.evaluation import EvalOptions, evaluate_checkpoints

    task = one_token_task
    judge = CountingJudge(2.0, task.rewards)  # twice the reward: its numbers are the reward's, doubled
    results = evaluate_checkpoints(
        {},
        [task.prompt] * 64,
        task.reward_func,
        one_token_sampler,
        EvalOptions(bon_ns=(2, 4), num_reference_samples=8, output_dir=tmp_path, plot=False),
        judges={"double": judge},
    )
    assert results.checkpoints == []
    assert results.reference["double"] == pytest.approx(2 * results.reference["reward"])
    assert results.reference["double_win_rate_vs_ref"] == pytest.approx(results.reference["win_rate_vs_ref"])
    for point in results.bon:
        assert point["double"] == pytest.approx(2 * point["reward"])
        assert point["double_win_rate_vs_ref"] == pytest.approx(point["win_rate_vs_ref"])
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["reference"]["path"] == task.model_path and data["settings"]["judges"] == ["double"]


def test_judges_and_paths_on_checkpoints(one_token_task, one_token_sampler):
    from trl_bon.evaluation import EvalOptions, evaluate_checkpoints

    task = one_token_task
    policy = _policy_with_probs(task, bon_probs(task.ref_probs, task.rewards, 2))
    results = evaluate_checkpoints(
        {"path": task.model_path, "instance": policy},
        {"prompt": [task.prompt] * 32},
        task.reward_func,
        one_token_sampler,
        EvalOptions(bon_ns=(2,), num_reference_samples=4, num_policy_samples=2),
        judges={"double": CountingJudge(2.0, task.rewards), "negated": CountingJudge(-1.0, task.rewards)},
    )
    for row in results.checkpoints:
        assert row["double"] == pytest.approx(2 * row["reward"])
        assert row["double_win_rate_vs_ref"] == pytest.approx(row["win_rate_vs_ref"])
        assert row["negated_win_rate_vs_ref"] == pytest.approx(1 - row["win_rate_vs_ref"])
    assert [row["path"] for row in results.checkpoints] == [task.model_path, "<instance>"]


def test_bad_checkpoints_fail_before_any_sampling(one_token_task, one_token_sampler, tiny_kit, tmp_path, monkeypatch):
    from trl_bon.evaluation import evaluate_checkpoints

    task = one_token_task
    judge = CountingJudge(1.0, task.rewards)

    def run(checkpoints, reference=one_token_sampler):
        return evaluate_checkpoints(checkpoints, [task.prompt], judge, reference)

    with pytest.raises(FileNotFoundError, match="checkpoint 'gone'.*does not exist"):
        run({"gone": str(tmp_path / "no_such_run")})
    (tmp_path / "outputs").mkdir()
    monkeypatch.chdir(tmp_path)
    # A relative path next to a local `outputs/` folder is a path, not a Hub id.
    with pytest.raises(FileNotFoundError, match="'outputs/jbond-run' does not exist"):
        run({"rel": "outputs/jbond-run"})
    with pytest.raises(ValueError, match="holds no model"):
        run({"empty": str(tmp_path / "outputs")})
    # Another tokenizer: the tiny BPE kit (≈300 tokens) against the 6-token π_ref, both ways round.
    with pytest.raises(ValueError, match="ships a tokenizer with another vocabulary"):
        run({"kit": tiny_kit["policy"]})
    with pytest.raises(ValueError, match="6-token vocabulary"):
        run({"small": task.model_path}, reference=tiny_kit["policy"])
    # A final model whose copy was cut short: named before the reference sampling, not when its turn comes.
    import shutil

    truncated = shutil.copytree(task.model_path, tmp_path / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"checkpoint 'cut' .*model\.safetensors is truncated"):
        run({"fine": task.model_path, "cut": str(truncated)})
    assert judge.calls == 0  # nothing was sampled or scored


def test_checkpoint_paths_are_checked_before_the_reference_loads(one_token_task, tmp_path, monkeypatch):
    """Every checkpoint's files are checked before π_ref loads (its tokenizer comes with the model), not only the
    first checkpoint's."""
    import trl_bon.sampling
    from trl_bon.evaluation import evaluate_checkpoints
    from trl_bon.sampling import Sampler

    def load_causal_lm(*args, **kwargs):
        raise AssertionError("π_ref loaded before every checkpoint path was checked")

    monkeypatch.setattr(trl_bon.sampling, "load_causal_lm", load_causal_lm)
    task = one_token_task
    checkpoints = {"fine": task.model_path, "gone": str(tmp_path / "no_such_run")}
    with pytest.raises(FileNotFoundError, match="checkpoint 'gone'.*does not exist"):
        evaluate_checkpoints(checkpoints, [task.prompt], CountingJudge(1.0, task.rewards), Sampler(task.model_path))


def _fake_model_dir(path, weights: bytes):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(weights)


def test_expand_checkpoints_names_and_final(tmp_path):
    from trl_bon.scripts.evaluate import expand_checkpoints

    run = tmp_path / "jbond-run"
    _fake_model_dir(run / "checkpoint-1", b"one")
    _fake_model_dir(run / "checkpoint-2", b"two")
    (run / "config.json").write_text("{}")
    (run / "model.safetensors").write_bytes(b"two")  # the final save is the last checkpoint: no duplicate row
    assert list(expand_checkpoints([f"jbond={run}"])) == ["jbond@1", "jbond@2"]
    (run / "model.safetensors").write_bytes(b"three")  # trained past the last checkpoint: a row of its own
    assert expand_checkpoints([f"jbond={run}"])["jbond@final"] == str(run)
    # A bare path is named meaningfully; a string is one entry (TRL-style YAML), not a list of characters.
    assert list(expand_checkpoints(str(run / "checkpoint-2"))) == ["jbond-run@2"]
    assert list(expand_checkpoints([str(run)])) == ["jbond-run@1", "jbond-run@2", "jbond-run@final"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        expand_checkpoints([f"x={tmp_path / 'missing'}"])


def _table_cells(table: str, ns) -> list[dict[str, str]]:
    """The value rows of `format_table` as {column: cell text}, cut at the columns' widths (values right-aligned)."""
    from trl_bon.scripts.evaluate import TABLE_KEYS

    columns = [*((header, width) for header, _, width in TABLE_KEYS), *((f"win/BoN{n}", 11) for n in ns)]
    header, *rows = table.splitlines()
    assert header == f"{'name':<24}" + "".join(f"{name:>{width}}" for name, width in columns)
    cells = []
    for row in rows:
        if not row.startswith(("jbond", "π_ref", "BoN-")):
            continue
        start, cell = 24, {"name": row[:24].strip()}
        for name, width in columns:
            cell[name] = row[start : start + width].strip()
            start += width
        cells.append(cell)
    return cells


def test_console_table_headers_match_every_row():
    """Issue 27: Best-of-N rows used to print their bound and estimate under "KL k1 / KL k3"."""
    from types import SimpleNamespace

    from trl_bon.scripts.evaluate import format_table

    checkpoint = {"name": "jbond@8", "reward": 0.5, "kl_k1": 0.25, "kl_k3": 0.125, "win_rate_vs_ref": 0.75}
    checkpoint.update(win_rate_vs_bon2=0.375, win_rate_vs_bon4=0.0625, effective_n_win=3.0, effective_n_kl=1.5)
    bon = [
        {"n": 2, "reward": 1.5, "kl_bound": 0.193, "kl_estimate": 0.5, "win_rate_vs_ref": 0.625},
        {"n": 4, "reward": 2.5, "kl_bound": 0.636, "kl_estimate": 0.875, "win_rate_vs_ref": 0.8125},
    ]
    results = SimpleNamespace(
        settings={"bon_ns": [2, 4]},
        checkpoints=[checkpoint],
        reference={"reward": -0.25, "win_rate_vs_ref": 0.5},
        bon=bon,
    )
    table = format_table(results)
    assert table.splitlines()[0].split() == [
        "name", "reward", "KL", "k1", "KL", "k3", "KL", "bound", "win/ref", "N_win", "N_KL", "win/BoN2", "win/BoN4",
    ]  # fmt: skip
    blank = {"KL k1": "", "KL k3": "", "KL bound": "", "N_win": "", "N_KL": "", "win/BoN2": "", "win/BoN4": ""}
    rows = [
        {"name": "jbond@8", "reward": "0.500", "KL k1": "0.250", "KL k3": "0.125", "KL bound": "", "win/ref": "0.750",
         "N_win": "3.000", "N_KL": "1.500", "win/BoN2": "0.375", "win/BoN4": "0.062"},
        {**blank, "name": "π_ref", "reward": "-0.250", "KL k1": "0.000", "KL k3": "0.000", "KL bound": "0.000",
         "win/ref": "0.500"},
        {**blank, "name": "BoN-2", "reward": "1.500", "KL k1": "0.500", "KL bound": "0.193", "win/ref": "0.625"},
        {**blank, "name": "BoN-4", "reward": "2.500", "KL k1": "0.875", "KL bound": "0.636", "win/ref": "0.812"},
    ]  # fmt: skip
    parsed = _table_cells(table, [2, 4])
    assert parsed == rows
    assert "KL bound: log N − (N−1)/N" in table


def test_checkpoints_share_the_sampling_seed(one_token_task, one_token_sampler):
    """Why the kit's models all show the same win rate against Best-of-N (docs/evaluation.md, "The console table"):
    every checkpoint is sampled with the same seed, so two policies that are (nearly) π_ref draw (nearly) the same
    completions and meet the same Best-of-N draws; with one sample on few prompts the win rate is a multiple of
    1/prompts. A policy that differs gets other samples and another win rate."""
    from trl_bon.evaluation import EvalOptions, evaluate_checkpoints

    task = one_token_task
    moved = _policy_with_probs(task, bon_probs(task.ref_probs, task.rewards, 4))
    results = evaluate_checkpoints(
        {"a": task.model_path, "b": task.model_path, "moved": moved},
        [task.prompt] * 8,
        task.reward_func,
        one_token_sampler,
        EvalOptions(bon_ns=(2,), num_reference_samples=4, num_policy_samples=1, plot=False),
    )
    a, b, moved_row = results.checkpoints
    assert a["win_rate_vs_bon2"] == b["win_rate_vs_bon2"] and a["reward"] == b["reward"]
    assert (a["win_rate_vs_bon2"] * 16) % 1 == 0  # 8 single samples, ties ½: multiples of 1/16
    assert moved_row["reward"] != a["reward"]


def test_eval_script_loads_models_with_the_model_options(tiny_kit, tmp_path, monkeypatch):
    """`trl-bon eval --attn_implementation eager` loads π_ref, the checkpoints and the reward model with it, as
    training does."""
    import trl_bon.evaluation
    from trl_bon.scripts.evaluate import make_parser, run
    from trl_bon.scripts.kit import write_prompts

    write_prompts(tmp_path / "prompts")
    argv = ["--model_name_or_path", tiny_kit["policy"], "--reward_model_name_or_path", tiny_kit["reward"]]
    argv += ["--dataset_name", str(tmp_path / "prompts"), "--dataset_test_split", "test"]
    argv += ["--checkpoints", tiny_kit["policy"], "--attn_implementation", "eager", "--output_dir", str(tmp_path)]
    seen = {}

    def capture(checkpoints, split, reward, reference, options, judges):
        seen.update(reference.model_init_kwargs, reward_model=reward.funcs[0].config._attn_implementation)
        raise KeyboardInterrupt  # stop before any sampling

    monkeypatch.setattr(trl_bon.evaluation, "evaluate_checkpoints", capture)
    with pytest.raises(KeyboardInterrupt):
        run(*make_parser().parse_args_and_config(argv))
    assert seen["attn_implementation"] == seen["reward_model"] == "eager"

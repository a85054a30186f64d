"""A missing or wrong policy / reward-model path fails in one line naming the path and what was expected, before any
model loads, and leaves no output folder behind (issue 27, item 4)."""

from types import SimpleNamespace

import pytest

from trl_bon import identity
from trl_bon.identity import ModelPathError, check_model_path


EXPECTED = "expected a local folder with config.json (written by `save_pretrained`) or a Hub id `org/name`"


@pytest.fixture(autouse=True)
def _fresh_hub_lookups():
    identity._hub_lookup_error.cache_clear()
    yield
    identity._hub_lookup_error.cache_clear()


def _message(name, what="reward model"):
    with pytest.raises(ModelPathError) as excinfo:
        check_model_path(name, what)
    message = str(excinfo.value)
    assert "\n" not in message and repr(name) in message and message.endswith(EXPECTED + ".")
    return message


def test_missing_local_folder(tmp_path):
    assert ": no such local folder;" in _message(str(tmp_path / "rewardx"))


def test_folder_without_config_and_a_file(tmp_path):
    assert "is not a model: the folder holds no config.json" in _message(str(tmp_path))
    file = tmp_path / "reward.yaml"
    file.write_text("x: 1\n")
    assert "is not a model: it is a file, not a folder" in _message(str(file))


def test_model_folders_pass(tiny_kit, tmp_path):
    check_model_path(tiny_kit["policy"])
    check_model_path(tiny_kit["reward"])
    (tmp_path / "adapter_config.json").write_text("{}")  # a LoRA adapter folder
    check_model_path(str(tmp_path))
    check_model_path(str(tmp_path.parent), model_folder=False)  # a training output_dir of `trl-bon eval`


def test_relative_path_with_a_typo_offline_names_the_cache(monkeypatch, tmp_path):
    """`kit_typo/reward` has a Hub id's shape: offline it is looked up in the local cache, not retried for a minute."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    message = _message("kit_typo/reward")
    assert "does not exist: no local folder of that name, and no Hub model of that id in the local cache" in message
    (tmp_path / "models--kit_typo--reward").mkdir()  # the same id once downloaded
    identity._hub_lookup_error.cache_clear()
    check_model_path("kit_typo/reward")


def test_hub_ids_online_one_lookup(monkeypatch, tmp_path):
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import RepositoryNotFoundError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    asked = []
    response = SimpleNamespace(headers={}, request=None)  # what the error reads of an HTTP response

    def model_info(self, repo_id, timeout=None, **kwargs):
        asked.append(repo_id)
        if repo_id == "org/missing":
            raise RepositoryNotFoundError("404 Repository Not Found", response=response)
        if repo_id == "org/unreachable":
            raise ConnectionError("Name or service not known")
        return object()

    monkeypatch.setattr(HfApi, "model_info", model_info)
    check_model_path("org/exists")
    check_model_path("org/exists")
    assert asked == ["org/exists"]  # asked once per id
    assert "no local folder of that name, and no Hub model of that id" in _message("org/missing")
    assert "the Hub could not be reached to look it up (ConnectionError)" in _message("org/unreachable")


# ----------------------------------------------------------------------------------------------------------------
# The command line: every command, a bad policy and a bad reward model


COMMANDS = [
    ("jbond", "jbond"),
    ("vbon", "vbon"),
    ("cache-ref-rewards", "vbon"),
    ("bon-sft", "bon_sft"),
    ("eval", "eval"),
]


@pytest.fixture(scope="module")
def kit_yaml(tiny_kit, tmp_path_factory):
    """The kit's YAML files, on the session's tiny models."""
    import yaml

    from trl_bon.scripts.kit import kit_configs, write_prompts

    root = tmp_path_factory.mktemp("kit_yaml")
    write_prompts(root / "prompts")
    files = {}
    for stem, config in kit_configs(root).items():
        config.update(model_name_or_path=tiny_kit["policy"], reward_model_name_or_path=[tiny_kit["reward"]])
        files[stem] = root / f"{stem}.yaml"
        files[stem].write_text(yaml.safe_dump(config))
    return files


@pytest.mark.parametrize(("command", "stem"), COMMANDS)
@pytest.mark.parametrize("flag", ["--model_name_or_path", "--reward_model_name_or_path"])
def test_cli_bad_path_is_one_line_and_leaves_no_folder(kit_yaml, tmp_path, capsys, monkeypatch, command, stem, flag):
    from trl_bon.scripts.cli import main

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the path check")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", no_load)
    monkeypatch.setattr("transformers.AutoModelForSequenceClassification.from_pretrained", no_load)
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", no_load)
    bad = str(tmp_path / "rewardx")
    output_dir = tmp_path / "out" / "run"
    argv = [command, "--config", str(kit_yaml[stem]), flag, bad, "--output_dir", str(output_dir)]
    assert main(argv, launch=False) == 2
    *pointer, err = capsys.readouterr().err.splitlines()  # the error: one line, after the metrics pointer of training
    assert pointer == (
        []
        if command in ("eval", "cache-ref-rewards")
        else [f"trl-bon {command}: the logged metrics are explained in docs/metrics.md"]
    )
    what = "policy `model_name_or_path`" if flag == "--model_name_or_path" else "reward model"
    assert err.startswith(f"trl-bon {command}: error: The {what}") and repr(bad) in err and EXPECTED in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", ["policy", "reward"])
def test_trainer_bad_path_fails_before_loading_and_leaves_no_folder(tiny_kit, prompt_dataset, tmp_path, bad):
    from tests.helpers import cpu_args
    from trl_bon import JBondConfig, JBondTrainer

    output_dir = tmp_path / "out" / "jbond"
    args = JBondConfig(**cpu_args(output_dir=str(output_dir), max_completion_length=4))
    model = str(tmp_path / "policyx") if bad == "policy" else tiny_kit["policy"]
    reward = str(tmp_path / "rewardx") if bad == "reward" else tiny_kit["reward"]
    with pytest.raises(ModelPathError, match="does not exist: no such local folder"):
        JBondTrainer(model, [reward], args=args, train_dataset=prompt_dataset)
    with pytest.raises(ModelPathError, match="does not exist: no such local folder"):
        JBondTrainer(model, reward, args=args, train_dataset=prompt_dataset)  # one reward, not in a list
    assert not (tmp_path / "out").exists()


def test_writable_check_leaves_no_folder_it_made(tmp_path):
    from trl_bon.trainer._config_checks import check_writable_dir

    check_writable_dir(str(tmp_path / "a" / "b"))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    check_writable_dir(str(tmp_path / "kept"))
    assert (tmp_path / "kept").is_dir() and list((tmp_path / "kept").iterdir()) == []

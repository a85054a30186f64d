"""Fault injection on checkpoints: kills at every stage of a save, partial and corrupted checkpoints, reused output
folders and mismatched resumes. Nothing may be lost: a resume equals the uninterrupted run bit for bit, or the error
names what to do."""

import copy
import errno
import json
import shutil

import pytest
import torch

from tests.helpers import cpu_args
from trl_bon.trainer import bon_sft_trainer


pytestmark = pytest.mark.slow

MAX_STEPS = 3  # a checkpoint after every step; every fault below hits the save of step 2


class Killed(Exception):
    """Stands for a SIGKILL or a full disk in the middle of a save: nothing after it runs, nothing is cleaned up."""


def token_sum_reward(completion_ids, **kwargs):
    return [float(sum(ids) % 7) + 0.1 * len(ids) for ids in completion_ids]


def _lora():
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)


def _jbond_args(output_dir, **overrides):
    from trl_bon import JBondConfig

    kwargs = cpu_args(
        output_dir=str(output_dir),
        max_completion_length=4,
        per_device_train_batch_size=6,
        max_steps=MAX_STEPS,
        learning_rate=0.05,
        anchor_ema_rate=0.3,
        save_strategy="steps",
        save_steps=1,
        save_total_limit=1,
    )
    kwargs.update(overrides)
    return JBondConfig(**kwargs)


def _jbond(tiny_kit, prompt_dataset, args, lora=True, model=None):
    from trl_bon import JBondTrainer

    return JBondTrainer(
        model=model or tiny_kit["policy"],
        reward_funcs=token_sum_reward,
        args=args,
        train_dataset=prompt_dataset,
        peft_config=_lora() if lora else None,
    )


def _tensors(trainer):
    """Policy and anchor LoRA tensors (the anchor's fp32 state is the adapter itself here)."""
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters() if "lora_" in name}


def _assert_equal(actual, expected):
    assert actual.keys() == expected.keys() and any(".anchor." in name for name in expected)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)


@pytest.fixture(scope="module")
def straight_run(tiny_kit, prompt_dataset, tmp_path_factory):
    """The uninterrupted run: its output folder (checkpoints 1 to 3, save_total_limit=None) and final tensors."""
    output_dir = tmp_path_factory.mktemp("straight")
    trainer = _jbond(tiny_kit, prompt_dataset, _jbond_args(output_dir, save_total_limit=None))
    trainer.train()
    return output_dir, _tensors(trainer)


def _kill(monkeypatch, stage):
    """Make the save of step 2 (the second save) fail at `stage`."""
    from transformers import Trainer

    from trl_bon.anchor import AnchorCallback
    from trl_bon.trainer import _checkpoint

    owner, name, error = {
        # Trainer wrote the policy weights, not yet the optimizer/scheduler/RNG.
        "policy_written": (Trainer, "_save_optimizer_and_scheduler", Killed(stage)),
        # The disk fills up while Trainer writes the RNG state.
        "disk_full": (Trainer, "_save_rng_state", OSError(errno.ENOSPC, "No space left on device")),
        # torch's own report of a full disk while it writes the optimizer state.
        "write_failure": (Trainer, "_save_optimizer_and_scheduler", RuntimeError(TORCH_WRITE_FAILURE)),
        # Everything Trainer writes is on disk; the anchor is not.
        "before_anchor": (AnchorCallback, "save_to_checkpoint", Killed(stage)),
        # Policy and anchor on disk, the manifest not yet.
        "anchor_written": (_checkpoint, "write_record", Killed(stage)),
        # Complete and renamed into place, killed before the old checkpoints rotate away.
        "before_rotation": (_checkpoint, "rotate_checkpoints", Killed(stage)),
    }[stage]
    original, calls = getattr(owner, name), []

    def fail_on_second_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, fail_on_second_save)


STAGES = ["policy_written", "disk_full", "before_anchor", "anchor_written", "before_rotation"]


@pytest.mark.parametrize("stage", STAGES)
def test_kill_during_save_loses_nothing(stage, tiny_kit, prompt_dataset, straight_run, tmp_path, monkeypatch):
    """A kill (or ENOSPC) at any stage of the save of step 2, with save_total_limit=1: checkpoint-1 survives (or
    checkpoint-2 is complete), and resuming gives the uninterrupted run's policy and anchor bit for bit."""
    with monkeypatch.context() as patch:
        _kill(patch, stage)
        with pytest.raises((Killed, OSError)):
            _jbond(tiny_kit, prompt_dataset, _jbond_args(tmp_path)).train()
    published = ["checkpoint-1", "checkpoint-2"] if stage == "before_rotation" else ["checkpoint-1"]
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == published

    resumed = _jbond(tiny_kit, prompt_dataset, _jbond_args(tmp_path))
    with pytest.warns(UserWarning, match="Removing .*interrupted") if stage != "before_rotation" else _no_warning():
        resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == MAX_STEPS
    _assert_equal(_tensors(resumed), straight_run[1])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-3"]


TORCH_WRITE_FAILURE = "[enforce fail at inline_container.cc:664] . unexpected pos 1536 vs 1430"


def test_write_failure_names_the_folder_and_keeps_the_previous_checkpoint(
    tiny_kit, prompt_dataset, tmp_path, monkeypatch
):
    """A failed write inside the save (torch says only "enforce fail … unexpected pos") is one error naming the
    staging folder, the cause and the fix; checkpoint-1 stays complete (every file matches its SHA-256)."""
    from trl_bon.trainer._checkpoint import CheckpointWriteError, read_manifest

    _kill(monkeypatch, "write_failure")
    with pytest.raises(CheckpointWriteError, match=r"Could not write checkpoint-2 into .*\.partial-checkpoint-2 "):
        _jbond(tiny_kit, prompt_dataset, _jbond_args(tmp_path)).train()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-1"]
    assert read_manifest(tmp_path / "checkpoint-1", verify=True)[0] is not None


def _no_warning():
    import contextlib

    return contextlib.nullcontext()


def test_staged_complete_checkpoint_is_published(tiny_kit, prompt_dataset, straight_run, tmp_path):
    """Killed between a complete staged save and its rename: the next run publishes it instead of discarding it."""
    shutil.copytree(straight_run[0] / "checkpoint-1", tmp_path / "checkpoint-1")
    shutil.copytree(straight_run[0] / "checkpoint-2", tmp_path / ".partial-checkpoint-2" / "checkpoint-2")
    resumed = _jbond(tiny_kit, prompt_dataset, _jbond_args(tmp_path))
    with pytest.warns(UserWarning, match="Publishing .*checkpoint-2"):
        resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == MAX_STEPS
    _assert_equal(_tensors(resumed), straight_run[1])


@pytest.mark.parametrize("fault", ["no_manifest", "truncated", "missing_anchor", "garbage_manifest"])
def test_incomplete_checkpoint_is_skipped_or_refused(fault, tiny_kit, prompt_dataset, straight_run, tmp_path):
    """A partial checkpoint-2 (killed inside Trainer's own save, an older writer, a truncated file, a corrupt
    manifest): `resume=True` warns and resumes checkpoint-1, exactly; an explicit path is refused with the reason."""
    for name in ("checkpoint-1", "checkpoint-2"):
        shutil.copytree(straight_run[0] / name, tmp_path / name)
    broken = tmp_path / "checkpoint-2"
    if fault == "no_manifest":
        (broken / "trl_bon_checkpoint.json").unlink()
        reason = "has no `trl_bon_checkpoint.json`"
    elif fault == "truncated":
        weights = broken / "adapter_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
        reason = "`adapter_model.safetensors` has 100 bytes"
    elif fault == "missing_anchor":
        shutil.rmtree(broken / "anchor")
        reason = "`anchor/[^`]+` is missing"
    else:
        (broken / "trl_bon_checkpoint.json").write_text('{"files": ')
        reason = "unreadable"

    trainer = _jbond(tiny_kit, prompt_dataset, _jbond_args(tmp_path))
    with pytest.raises(ValueError, match=f"Cannot resume from .*checkpoint-2: .*{reason}.*checkpoint-1"):
        trainer.train(resume_from_checkpoint=str(broken))
    with pytest.warns(UserWarning, match=f"Skipping .*checkpoint-2 .*{reason}"):
        trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == MAX_STEPS
    _assert_equal(_tensors(trainer), straight_run[1])


def test_reused_output_dir_fresh_start_is_refused(tiny_kit, prompt_dataset, straight_run, tmp_path):
    """A new run from scratch into a folder with an earlier run's checkpoints would let `resume=True` (or an old
    anchor) leak into it: refused before training, naming the three ways out."""
    shutil.copytree(straight_run[0] / "checkpoint-1", tmp_path / "checkpoint-1")
    trainer = _jbond(tiny_kit, prompt_dataset, _jbond_args(tmp_path))
    with pytest.raises(ValueError, match="already holds checkpoints .*checkpoint-1.*resume_from_checkpoint=True.*new"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_resuming_a_finished_run_is_refused(tiny_kit, prompt_dataset, straight_run, tmp_path):
    """Transformers would run one step past `max_steps` when resuming the final checkpoint: refused instead."""
    shutil.copytree(straight_run[0] / f"checkpoint-{MAX_STEPS}", tmp_path / f"checkpoint-{MAX_STEPS}")
    trainer = _jbond(tiny_kit, prompt_dataset, _jbond_args(tmp_path))
    with pytest.raises(ValueError, match=f"at step {MAX_STEPS}, which already reaches `max_steps`.*Raise `max_steps`"):
        trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == 0


def test_no_checkpoint_to_resume(tiny_kit, prompt_dataset, tmp_path):
    trainer = _jbond(tiny_kit, prompt_dataset, _jbond_args(tmp_path))
    with pytest.raises(ValueError, match="No complete checkpoint in `output_dir`"):
        trainer.train(resume_from_checkpoint=True)


def test_manifest_records_trainer_and_settings(straight_run):
    manifest = json.loads((straight_run[0] / "checkpoint-2" / "trl_bon_checkpoint.json").read_text())
    assert manifest["settings"] == {
        "trainer": "JBondTrainer",
        "method": "jbond",
        "anchor": "ema",
        "num_candidates": 2,
        "num_generations": 3,
        "finetuning": "lora",
        "adapter_rank": 4,
        "adapter_target_modules": ["q_proj", "v_proj"],
    }
    assert manifest["global_step"] == 2 and manifest["model"]["name_or_path"]
    assert {"anchor/anchor.safetensors", "adapter_model.safetensors", "optimizer.pt", "rng_state.pth"} <= set(
        manifest["files"]
    )


def test_same_size_bit_flip_is_named_on_resume(tiny_kit, prompt_dataset, straight_run, tmp_path):
    """A flipped byte keeps the size (the manifest's size check passes); the SHA-256 names the file."""
    shutil.copytree(straight_run[0] / "checkpoint-2", tmp_path / "checkpoint-2")
    anchor = tmp_path / "checkpoint-2" / "anchor" / "anchor.safetensors"
    data = bytearray(anchor.read_bytes())
    data[-3] ^= 0x40  # inside the last tensor's values
    anchor.write_bytes(bytes(data))
    trainer = _jbond(tiny_kit, prompt_dataset, _jbond_args(tmp_path))
    with pytest.raises(ValueError, match=r"checkpoint-2: `anchor/anchor\.safetensors` differs from the SHA-256"):
        trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == 0


def test_two_runs_in_one_output_dir(tiny_kit, prompt_dataset, tmp_path):
    """A run holding the folder's lock (another process) makes a second run fail at init; once that process dies,
    its lock file no longer blocks. A trainer holds the lock while it trains and releases it after."""
    import subprocess
    import sys

    from transformers import TrainerCallback

    from trl_bon.trainer._checkpoint import LOCK_NAME, OutputDirLock

    holder = (
        "import fcntl, os, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
        "f.write(f'pid {os.getpid()}'); f.flush(); print('locked', flush=True); time.sleep(120)"
    )
    tmp_path.mkdir(exist_ok=True)
    process = subprocess.Popen([sys.executable, "-c", holder, str(tmp_path / LOCK_NAME)], stdout=subprocess.PIPE)
    try:
        assert process.stdout.readline().strip() == b"locked"
        with pytest.raises(RuntimeError, match=rf"Another run \(pid {process.pid}\) is training in `output_dir`"):
            _jbond(tiny_kit, prompt_dataset, _jbond_args(tmp_path, max_steps=1))
    finally:
        process.kill()
        process.wait()

    seen = []

    class TryLock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            with pytest.raises(RuntimeError, match="Another run"):
                OutputDirLock(tmp_path).acquire()
            seen.append(state.global_step)

    trainer = _jbond(tiny_kit, prompt_dataset, _jbond_args(tmp_path, max_steps=1, save_strategy="no"))
    trainer.add_callback(TryLock())
    trainer.train()
    assert seen == [1]
    lock = OutputDirLock(tmp_path)
    lock.acquire()  # released when train() returned
    lock.release()


# ----------------------------------------------------------------------------------------------------------------
# Mismatched resumes and reused folders of another configuration: refused at init, before any model loads (the model
# path below does not exist, so reaching the model load would raise a different error).

MISSING_MODEL = "/nonexistent/model"


def _vbon(output_dir, prompt_dataset, **overrides):
    from trl_bon import VBoNConfig, VBoNTrainer

    args = VBoNConfig(
        **cpu_args(output_dir=str(output_dir), num_candidates=2, save_strategy="steps", max_completion_length=4),
        **overrides,
    )
    return VBoNTrainer(MISSING_MODEL, token_sum_reward, args, prompt_dataset, peft_config=_lora())


def test_vbon_refuses_a_jbond_checkpoint(straight_run, prompt_dataset, tmp_path):
    checkpoint = str(straight_run[0] / "checkpoint-2")
    with pytest.raises(ValueError, match="trainer: checkpoint 'JBondTrainer', this run 'VBoNTrainer'"):
        _vbon(tmp_path, prompt_dataset, resume_from_checkpoint=checkpoint)
    with pytest.raises(ValueError, match="holds checkpoints of another run .*JBondTrainer.*new `output_dir`"):
        _vbon(straight_run[0], prompt_dataset)


@pytest.mark.parametrize(
    ("overrides", "lora", "difference"),
    [
        ({}, False, "finetuning: checkpoint 'lora', this run 'full'"),
        (
            {"mode": "bond", "num_candidates": 3, "num_quantile_samples": 3, "per_device_train_batch_size": 8},
            True,
            "num_candidates: checkpoint 2, this run 3",
        ),
        ({"anchor": "fixed"}, True, "anchor: checkpoint 'ema', this run 'fixed'"),
    ],
    ids=["lora_vs_full", "other_n", "other_anchor"],
)
def test_jbond_refuses_a_checkpoint_of_other_settings(
    overrides, lora, difference, straight_run, prompt_dataset, tmp_path
):
    from trl_bon import JBondTrainer

    args = _jbond_args(tmp_path, resume_from_checkpoint=str(straight_run[0] / "checkpoint-2"), **overrides)
    with pytest.raises(ValueError, match=f"Cannot resume from .*{difference}"):
        JBondTrainer(MISSING_MODEL, token_sum_reward, args, prompt_dataset, peft_config=_lora() if lora else None)


def test_checkpoint_refusal_is_the_shared_provenance_check(straight_run, prompt_dataset, tmp_path):
    """The manifest goes through `trl_bon.provenance`: one error type, the differing fields listed first."""
    from trl_bon.provenance import StaleResultError

    args = _jbond_args(tmp_path, resume_from_checkpoint=str(straight_run[0] / "checkpoint-2"), anchor="fixed")
    with pytest.raises(StaleResultError, match=r"other settings than this run \(fields that differ: 'anchor'\)"):
        from trl_bon import JBondTrainer

        JBondTrainer(MISSING_MODEL, token_sum_reward, args, prompt_dataset, peft_config=_lora())


def test_resume_onto_another_base_model_is_refused(straight_run, one_token_task, prompt_dataset, tiny_kit, tmp_path):
    """Same settings, other base model (a LoRA adapter would load onto it silently): refused before training."""
    shutil.copytree(straight_run[0] / "checkpoint-2", tmp_path / "checkpoint-2")
    trainer = _jbond(tiny_kit, prompt_dataset, _jbond_args(tmp_path), model=one_token_task.model_path)
    with pytest.raises(ValueError, match=r"Cannot resume .*model: checkpoint '.*', this run '.*'") as error:
        trainer.train(resume_from_checkpoint=True)
    assert "fields that differ: 'model'" in str(error.value) and "(config differ)" in str(error.value)
    assert trainer.state.global_step == 0


def test_bon_sft_checkpoints_are_atomic_and_self_describing(tiny_kit, prompt_dataset, tmp_path):
    """BoN-SFT goes through the same save path: a manifest naming the trainer, N and the data it trains on; a resume
    onto other data (e.g. re-sampled) or by J-BOND is refused at init, before any model loads."""
    from transformers import AutoTokenizer

    from trl_bon import BoNSFTConfig, BoNSFTTrainer, JBondTrainer, best_of_n, bon_sft_dataset
    from trl_bon.sampling import GenerationSettings, Sampler

    overrides = dict(save_strategy="steps", save_steps=1, save_total_limit=1, max_steps=2)
    args = BoNSFTConfig(**cpu_args(output_dir=str(tmp_path), num_candidates=2, max_completion_length=4, **overrides))
    tokenizer = AutoTokenizer.from_pretrained(tiny_kit["policy"])
    prompts, settings = prompt_dataset["prompt"][:8], GenerationSettings.from_trainer_args(args)
    sampler = Sampler(tiny_kit["policy"], settings, tokenizer=tokenizer, progress=False)
    bon = best_of_n(sampler, prompts, token_sum_reward, 2)
    data = bon_sft_dataset(bon, tokenizer)
    BoNSFTTrainer(tiny_kit["policy"], args=args, train_dataset=data).train()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".partial")] == []
    manifest = json.loads((tmp_path / "checkpoint-2" / "trl_bon_checkpoint.json").read_text())
    assert manifest["settings"] == {
        "trainer": "BoNSFTTrainer",
        "method": "bon_sft",
        "num_candidates": 2,
        "train_data_sha256": bon_sft_trainer.bon_data_fingerprint(data),
        "finetuning": "full",
    }
    assert len(manifest["settings"]["train_data_sha256"]) == 64
    checkpoint = str(tmp_path / "checkpoint-2")
    resampled = bon_sft_dataset(
        best_of_n(Sampler(tiny_kit["policy"], settings, tokenizer=tokenizer, seed=1), prompts, token_sum_reward, 2),
        tokenizer,
    )
    other_args = copy.copy(args)
    other_args.output_dir, other_args.resume_from_checkpoint = str(tmp_path / "other"), checkpoint
    with pytest.raises(ValueError, match="Cannot resume .*train_data_sha256: checkpoint '[0-9a-f]{64}', this run"):
        BoNSFTTrainer(MISSING_MODEL, args=other_args, train_dataset=resampled)
    jbond_args = _jbond_args(tmp_path / "jbond", resume_from_checkpoint=checkpoint)
    with pytest.raises(ValueError, match="trainer: checkpoint 'BoNSFTTrainer', this run 'JBondTrainer'"):
        JBondTrainer(MISSING_MODEL, token_sum_reward, jbond_args, prompt_dataset)


@pytest.mark.parametrize("files", [[], {"model.safetensors": {"size": 3}}, {"model.safetensors": "3"}])
def test_damaged_manifest_entries_read_as_unreadable(tmp_path, files):
    """A manifest that parses but whose `files` are not well-formed entries is an incomplete checkpoint, no crash."""
    from trl_bon.trainer._checkpoint import MANIFEST_NAME, read_manifest

    (tmp_path / "model.safetensors").write_bytes(b"abc")
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"files": files}))
    manifest, why = read_manifest(tmp_path, verify=True)
    assert manifest is None and f"its `{MANIFEST_NAME}` is unreadable" in why


def test_format_1_manifest_is_checked_by_size(tmp_path):
    """docs/reliability.md: a checkpoint whose manifest recorded sizes only (format 1) is complete while every file has
    its recorded size, and is refused when one does not; it has no digest to verify."""
    from trl_bon.trainer._checkpoint import MANIFEST_NAME, read_manifest

    (tmp_path / "model.safetensors").write_bytes(b"abc")
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"files": {"model.safetensors": 3}}))
    manifest, why = read_manifest(tmp_path, verify=True)
    assert why is None and manifest["files"] == {"model.safetensors": 3}
    (tmp_path / "model.safetensors").write_bytes(b"abcd")
    manifest, why = read_manifest(tmp_path, verify=True)
    assert manifest is None and why == "`model.safetensors` has 4 bytes instead of 3 (truncated or overwritten)"

"""Atomic, self-describing checkpoints and checked resumes ([`CheckpointMixin`]; guarantees: docs/reliability.md)."""

import hashlib
import os
import re
import shutil
import socket
import warnings
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, SaveStrategy, rotate_checkpoints, sort_checkpoints

from ..identity import model_identity
from ..provenance import read_record, refuse_if_stale, write_record
from ._config_checks import check_writable_dir


MANIFEST_NAME = "trl_bon_checkpoint.json"
MANIFEST_FORMAT = 3  # 3: the model's config hash of `trl_bon.identity`; 2: each file's SHA-256; 1: its size only
LOCK_NAME = "_trl_bon.lock"  # the leading underscore keeps it out of what `push_to_hub` uploads
STAGING_PREFIX = ".partial-"  # not matched by Trainer's `checkpoint-*` glob nor by `get_last_checkpoint`
#: How torch (`PytorchStreamWriter`, "enforce fail … unexpected pos") and safetensors report a failed write.
_WRITE_FAILURE = re.compile(r"unexpected pos|write failed|PytorchStreamWriter|No space left|Read-only file|Disk quota")


def model_record(model) -> dict[str, str]:
    """What a checkpoint's weights must load onto: the model's config hash, labelled with its path."""
    return {"name_or_path": str(getattr(model.config, "_name_or_path", "")), **model_identity(model, weights=False)}


def finetuning_settings(model, peft_config) -> dict[str, Any]:
    """The fine-tuning layout a resume must match: full, or the adapter type, rank and target modules."""
    if peft_config is None and hasattr(model, "peft_config"):
        peft_config = model.peft_config[model.active_adapter]
    if peft_config is None:
        return {"finetuning": "full"}
    targets = peft_config.target_modules
    targets = sorted(targets) if isinstance(targets, set | list | tuple) else targets
    return {
        "finetuning": str(getattr(peft_config.peft_type, "value", peft_config.peft_type)).lower(),
        "adapter_rank": getattr(peft_config, "r", None),
        "adapter_target_modules": targets,
    }


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_manifest(checkpoint: str | os.PathLike, verify: bool = False) -> tuple[dict | None, str | None]:
    """`(manifest, None)` for a complete checkpoint, else `(None, why)`; `verify` also checks every file's SHA-256."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        return None, f"{checkpoint} is not a directory"
    if not (checkpoint / MANIFEST_NAME).is_file():
        return None, f"it has no `{MANIFEST_NAME}` (a save that was interrupted, or not written by trl-bon)"
    try:  # format 1 recorded each file's size alone
        manifest = read_record(checkpoint / MANIFEST_NAME, "manifest", "")
        files = {
            name: (entry, None) if isinstance(entry, int) else (entry["size"], entry["sha256"])
            for name, entry in manifest["files"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        return None, f"its `{MANIFEST_NAME}` is unreadable ({type(error).__name__}: {error})"
    for name, (size, digest) in files.items():
        file = checkpoint / name
        if not file.is_file():
            return None, f"`{name}` is missing"
        if file.stat().st_size != size:
            return None, f"`{name}` has {file.stat().st_size} bytes instead of {size} (truncated or overwritten)"
        if verify and digest is not None and _file_sha256(file) != digest:
            return None, f"`{name}` differs from the SHA-256 recorded when it was saved (corrupted or modified)"
    return manifest, None


def complete_checkpoints(run_dir: str | os.PathLike, warn: bool = False) -> dict[Path, dict]:
    """The complete checkpoints of `run_dir` (oldest step first) with their manifests; `warn` names the others."""
    complete = {}
    for checkpoint in map(Path, sort_checkpoints(str(run_dir))):
        manifest, why = read_manifest(checkpoint)
        if manifest is not None:
            complete[checkpoint] = manifest
        elif warn:
            warnings.warn(f"Skipping {checkpoint} when resuming: {why}.", UserWarning, stacklevel=4)
    return complete


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename stays atomic, only its durability is lost
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, unwritable folder); the earlier checkpoints are intact."""


class OutputDirLock:
    """One training run per `output_dir`: an exclusive `fcntl.flock` on its `_trl_bon.lock` (none on Windows)."""

    def __init__(self, output_dir: str | os.PathLike):
        self.path = Path(output_dir) / LOCK_NAME
        self._handle = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for as long as the lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise RuntimeError(
                f"Another run ({owner}) is training in `output_dir` ({self.path.parent}); two runs in one folder "
                "would overwrite each other's checkpoints. Wait for it to finish, or use another `output_dir`."
            ) from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            import fcntl

            # Unlocked explicitly: forked processes (dataloader workers) share the file and would keep the lock.
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


class _ResumeStateCallback(TrainerCallback):
    """Restore the trainer's own state (the anchor) after `Trainer` restored the rest from the same checkpoint."""

    def __init__(self, trainer: "CheckpointMixin"):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer._resume_checkpoint is not None:
            self.trainer._load_resume_state(Path(self.trainer._resume_checkpoint))


class CheckpointMixin:
    """Atomic checkpoints and checked resumes for a `Trainer` subclass, which calls `_init_checkpointing` early in
    `__init__` and may override `_save_resume_state` / `_load_resume_state` to checkpoint its own state."""

    _checkpoint_staging: str | None = None

    def _save_resume_state(self, checkpoint_dir: Path) -> None:
        """Write the trainer's own resume state into the staged `checkpoint_dir` (all processes call it)."""

    def _load_resume_state(self, checkpoint_dir: Path) -> None:
        """Restore what `_save_resume_state` wrote, after `Trainer` restored the model from `checkpoint_dir`."""

    def _init_checkpointing(self, args, settings: dict[str, Any]) -> None:
        """Record the run's settings; refuse an unusable `output_dir` or resume checkpoint before any model loads."""
        self._checkpoint_settings = {"trainer": type(self).__name__, **settings}
        self._verified_checkpoints = set()
        if args.should_save:
            check_writable_dir(args.output_dir)
            if os.path.isdir(args.output_dir):  # (a folder that does not exist yet has no run in it)
                probe = OutputDirLock(args.output_dir)
                probe.acquire()
                probe.release()
        if args.save_strategy != SaveStrategy.NO:
            for checkpoint, manifest in complete_checkpoints(args.output_dir).items():
                refuse_if_stale(
                    manifest.get("settings", {}),
                    self._checkpoint_settings,
                    subject=f"`output_dir` ({args.output_dir}) holds checkpoints of another run "
                    f"({checkpoint.name}), made with",
                    escape="This run's checkpoints would mix with them: use a new `output_dir`, or delete "
                    f"`{Path(args.output_dir) / PREFIX_CHECKPOINT_DIR}-*` if that run is no longer needed.",
                    saved_as="checkpoint",
                )
        if isinstance(args.resume_from_checkpoint, str) and args.resume_from_checkpoint:
            self._check_resumable(args.resume_from_checkpoint)

    def _check_resumable(self, checkpoint: str | os.PathLike, model=None) -> dict:
        """The manifest of `checkpoint`, or an error naming what is incomplete, changed or of other settings."""
        manifest, why = read_manifest(checkpoint, verify=str(checkpoint) not in self._verified_checkpoints)
        if manifest is None:
            others = complete_checkpoints(Path(checkpoint).parent)
            complete = [path for path in others if path.resolve() != Path(checkpoint).resolve()]
            alternative = f" The newest complete one there is {complete[-1]}." if complete else ""
            raise ValueError(
                f"Cannot resume from {checkpoint}: {why}, so it may lack part of the state to resume.{alternative} "
                "Pass a complete checkpoint, `resume_from_checkpoint=True` for the newest complete one, or start a "
                "new run in a new `output_dir`."
            )
        self._verified_checkpoints.add(str(checkpoint))
        saved, current = dict(manifest.get("settings", {})), dict(self._checkpoint_settings)
        if model is not None and manifest.get("format", 1) >= 3:  # older manifests hashed the config another way
            saved["model"], current["model"] = manifest.get("model", {}), model_record(model)
        refuse_if_stale(
            saved,
            current,
            subject=f"Cannot resume from {checkpoint}: it was written with",
            escape="Resume with the same trainer, method and settings, or start a new run in a new `output_dir`.",
            saved_as="checkpoint",
        )
        return manifest

    def _resolve_resume(self, resume_from_checkpoint: str | bool | None) -> str | None:
        """The checkpoint to resume (checked), or `None` for a fresh start into an `output_dir` without checkpoints."""
        run_dir = Path(self.args.output_dir)
        if resume_from_checkpoint is True:
            complete = list(complete_checkpoints(run_dir, warn=True))
            if not complete:
                raise ValueError(
                    f"No complete checkpoint in `output_dir` ({run_dir}) to resume from; pass a checkpoint path, or "
                    "`resume_from_checkpoint=None` to start from scratch."
                )
            resume_from_checkpoint = str(complete[-1])
        if resume_from_checkpoint:
            manifest = self._check_resumable(resume_from_checkpoint, self.accelerator.unwrap_model(self.model))
            if 0 < self.args.max_steps <= manifest["global_step"]:
                # Transformers would still run one more step past `max_steps`, silently changing the final weights.
                raise ValueError(
                    f"{resume_from_checkpoint} is at step {manifest['global_step']}, which already reaches "
                    f"`max_steps` ({self.args.max_steps}): that run finished; its final weights are in it. "
                    "Raise `max_steps` to train further."
                )
            return str(resume_from_checkpoint)
        if self.args.save_strategy != SaveStrategy.NO and (existing := sort_checkpoints(str(run_dir))):
            raise ValueError(
                f"`output_dir` ({run_dir}) already holds checkpoints ({', '.join(map(os.path.basename, existing))}) "
                "of an earlier run, which a later resume would mix with this fresh start. Resume that run with "
                f"`resume_from_checkpoint=True`, use a new `output_dir`, or delete its `{PREFIX_CHECKPOINT_DIR}-*`."
            )
        return None

    def _clean_staging(self, run_dir: Path) -> None:
        """Delete staging directories left by a save that was killed: they never became checkpoints."""
        if not self.args.should_save or not run_dir.is_dir():
            return
        for leftover in sorted(run_dir.glob(f"{STAGING_PREFIX}{PREFIX_CHECKPOINT_DIR}-*")):
            name = leftover.name.removeprefix(STAGING_PREFIX)
            staged, final = leftover / name, run_dir / name
            if read_manifest(staged)[0] is not None and not final.exists():
                warnings.warn(f"Publishing {final}: its save was complete but killed before the rename.", stacklevel=4)
                self._publish(staged, final)
                continue
            warnings.warn(f"Removing {leftover}, left by an interrupted checkpoint save.", UserWarning, stacklevel=4)
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in run_dir.glob(f"{STAGING_PREFIX}replaced-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None):
        """`Trainer.train`, resuming only a complete checkpoint of the same trainer and settings."""
        lock = OutputDirLock(self.args.output_dir)
        if self.args.should_save:
            lock.acquire()  # before cleaning staging folders, which a running save would own
        try:
            self._clean_staging(Path(self.args.output_dir))
            self.accelerator.wait_for_everyone()
            resume_from_checkpoint = self._resolve_resume(resume_from_checkpoint)
            if not any(isinstance(callback, _ResumeStateCallback) for callback in self.callback_handler.callbacks):
                self.add_callback(_ResumeStateCallback(self))
            self._resume_checkpoint = resume_from_checkpoint
            return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval)
        finally:
            lock.release()

    def _get_output_dir(self, trial) -> str:
        # While a checkpoint is being saved, `Trainer._save_checkpoint` writes (and rotates) inside the staging root.
        return self._checkpoint_staging or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """Write the checkpoint into a staging folder, then publish it by a rename and rotate."""
        run_dir = Path(self._get_output_dir(trial))  # not staging yet: the real run folder
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging_root = run_dir / f"{STAGING_PREFIX}{name}"
        staged, final = staging_root / name, run_dir / name
        if self.args.should_save and staging_root.exists():
            shutil.rmtree(staging_root)
        self.accelerator.wait_for_everyone()
        try:  # Transformers' files, the trainer's state, then the manifest
            self._checkpoint_staging = str(staging_root)
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self._checkpoint_staging = None
            if self.state.best_model_checkpoint == str(staged):
                self.state.best_model_checkpoint = str(final)
                if self.args.should_save:
                    self.state.save_to_json(str(staged / "trainer_state.json"))
            self._save_resume_state(staged)
            self.accelerator.wait_for_everyone()  # every rank's files (its `rng_state_<rank>.pth`) are written
            if self.args.should_save:
                manifest = {
                    "format": MANIFEST_FORMAT,
                    "global_step": self.state.global_step,
                    "settings": self._checkpoint_settings,
                    "model": model_record(self.accelerator.unwrap_model(model)),
                    "files": {
                        str(path.relative_to(staged)): {"size": path.stat().st_size, "sha256": _file_sha256(path)}
                        for path in sorted(staged.rglob("*"))
                        if path.is_file() and path.name != MANIFEST_NAME
                    },
                }
                write_record(staged / MANIFEST_NAME, manifest)
                for root, _, files in os.walk(staged):  # every file and folder on disk before the rename shows them
                    for file in files:
                        with open(os.path.join(root, file), "rb") as handle:
                            os.fsync(handle.fileno())
                    _fsync_dir(Path(root))
        except Exception as error:
            if not isinstance(error, OSError) and not _WRITE_FAILURE.search(str(error)):
                raise
            raise CheckpointWriteError(
                f"Could not write {name} into {staging_root} ({type(error).__name__}: {error}): the disk is full or "
                f"the folder is not writable. The earlier checkpoints in {run_dir} are intact: free space or fix the "
                "permissions, then resume with `resume_from_checkpoint=True`."
            ) from error
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            self._publish(staged, final)
            rotate_checkpoints(
                output_dir=str(run_dir),
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )
        self.accelerator.wait_for_everyone()

    @staticmethod
    def _publish(staged: Path, final: Path) -> None:
        """Rename `staged` to `final` (replacing an older `final` of the same step), then drop the staging root."""
        replaced = final.parent / f"{STAGING_PREFIX}replaced-{final.name}"
        if final.exists():
            shutil.rmtree(replaced, ignore_errors=True)
            os.replace(final, replaced)
        os.replace(staged, final)
        _fsync_dir(final.parent)
        shutil.rmtree(staged.parent, ignore_errors=True)
        shutil.rmtree(replaced, ignore_errors=True)

"""The TRL version guard runs when trl-bon first imports TRL's internals, i.e. when any trainer is imported."""

import ast
import importlib
import warnings
from pathlib import Path

import pytest


TRAINERS = sorted((Path(__file__).resolve().parents[1] / "trl_bon" / "trainer").glob("*_trainer.py"))


def test_importing_the_compat_module_checks_the_trl_version(monkeypatch):
    import trl

    import trl_bon._trl_compat as compat

    monkeypatch.setattr(trl, "__version__", "9.0.0")
    with pytest.warns(UserWarning, match="trl 9.0.0 is installed"):
        importlib.reload(compat)
    monkeypatch.setattr(trl, "__version__", "1.16.0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(compat)  # a tested version is silent


def _imports_compat(path: Path, seen: set) -> bool:
    """Whether `path` imports `_trl_compat`, itself or through a sibling module of the trainer package it imports."""
    seen.add(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level > 0}
    if "_trl_compat" in modules:
        return True
    siblings = [path.parent / f"{module}.py" for module in modules if module]
    return any(_imports_compat(s, seen) for s in siblings if s.is_file() and s not in seen)


@pytest.mark.parametrize("path", TRAINERS, ids=[p.stem for p in TRAINERS])
def test_every_trainer_imports_the_compat_module(path):
    assert _imports_compat(path, set()), f"{path.name} must import trl_bon._trl_compat (it runs the TRL version guard)"


def test_a_trainer_without_the_compat_import_is_caught(tmp_path):
    (tmp_path / "_base.py").write_text("from .other import thing\n")
    (tmp_path / "x_trainer.py").write_text("from ._base import Base\nfrom .. import core\n")
    assert not _imports_compat(tmp_path / "x_trainer.py", set())
    (tmp_path / "_base.py").write_text("from .._trl_compat import use_adapter\n")
    assert _imports_compat(tmp_path / "x_trainer.py", set())


def _requirements() -> dict:
    """`{name: Requirement}` of pyproject.toml's dependencies (and the vllm extra's trl, keyed `trl[vllm]`)."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    requirements = {Requirement(line).name: Requirement(line) for line in project["dependencies"]}
    (vllm,) = [Requirement(line) for line in project["optional-dependencies"]["vllm"] if line.startswith("trl")]
    return {**requirements, "trl[vllm]": vllm}


def test_trl_range_matches_the_version_guard():
    """pyproject.toml's trl range (also in the vllm extra) is the guard's tested range: pip and the warning agree."""
    from packaging.version import Version

    from trl_bon._trl_compat import TESTED_TRL

    requirements = _requirements()
    for name in ("trl", "trl[vllm]"):
        bounds = {s.operator: Version(s.version) for s in requirements[name].specifier}
        assert (bounds[">="], bounds["<"]) == TESTED_TRL and len(bounds) == 2, name


@pytest.mark.parametrize("name,cap", [("transformers", "6"), ("accelerate", "2"), ("peft", "1")])
def test_core_libraries_are_capped_at_their_next_major(name, cap):
    """The upper-bound policy (pyproject.toml's comment): transformers, accelerate and peft below their next major."""
    specifier = _requirements()[name].specifier
    assert [s.version for s in specifier if s.operator == "<"] == [cap]
    assert not specifier.contains(f"{cap}.0.0") and specifier.contains(f"{int(cap) - 1}.99")


def test_installed_versions_satisfy_pyproject():
    """What the environment resolved lies inside every bound (a cap too low for CI's install would show here)."""
    from importlib.metadata import version

    for name, requirement in _requirements().items():
        if name == "trl[vllm]":
            continue
        installed = version(name)
        assert requirement.specifier.contains(installed, prereleases=True), f"{name} {installed} outside {requirement}"

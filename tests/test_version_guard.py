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


@pytest.mark.parametrize("path", TRAINERS, ids=[p.stem for p in TRAINERS])
def test_every_trainer_imports_the_compat_module(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "_trl_compat" in modules, f"{path.name} must import trl_bon._trl_compat (it runs the TRL version guard)"

"""`trl_bon.core` is pure torch: importing any of its modules must not pull in TRL, transformers or the rest."""

import pkgutil
import subprocess
import sys

import trl_bon.core


CORE_MODULES = sorted(f"trl_bon.core.{m.name}" for m in pkgutil.iter_modules(trl_bon.core.__path__))
HEAVY = ("trl", "transformers", "peft", "accelerate", "datasets")


def test_every_core_module_is_listed():
    assert {"trl_bon.core.jbond", "trl_bon.core.metrics", "trl_bon.core.vbon"} <= set(CORE_MODULES)


def test_no_core_module_imports_a_heavy_library():
    code = (
        "import importlib, sys\n"
        f"for name in {CORE_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY=\n" in result.stdout, result.stdout

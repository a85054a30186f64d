"""`trl_bon.core` is pure torch: importing it must not pull in TRL (or transformers)."""

import subprocess
import sys


def test_core_does_not_import_trl():
    code = (
        "import sys\n"
        "import trl_bon.core\n"
        "from trl_bon.core import bon_probs, empirical_quantile, jbond_reward, ema_update_\n"
        "heavy = sorted(m for m in ('trl', 'transformers', 'peft', 'accelerate', 'datasets') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY=\n" in result.stdout, result.stdout

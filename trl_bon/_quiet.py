"""Silence three libraries' known-spurious messages at their source, so `trl-bon` prints only what a user can act on.

Imported by `trl_bon/__init__.py` (before TRL, transformers or bitsandbytes are), so it covers the command line and
library use alike. Each filter matches one message exactly; anything else those loggers or modules say still shows.

- **bitsandbytes** (imported by transformers whenever it is installed, `trl-bon jbond --help` included) tries at
  import, on CPUs with AVX512-BF16, to fetch a 4-bit CPU matmul kernel from the Hub through `kernels`. Offline or
  without that Hub repository it logs "Failed to load CPU gemm_4bit_forward … Please make sure you already
  `pip install kernels`", wrong advice when `kernels` is installed, and `kernels` adds "Skipping publisher trust
  check …". The kernel only serves 4-bit layers on a CPU; bitsandbytes falls back to its own, so nothing is lost.
- **transformers ≥ 5.25** renamed `gradient_checkpointing*` to `activation_checkpointing*` on models. TRL 1.16
  (`unwrap_model_for_generation`, `disable_gradient_checkpointing`) and PEFT call the old names on every generation
  step, which prints `FutureWarning`s no trl-bon user can fix. The config field of the same name is *not* filtered:
  our configs pass it under the new name (see `trl_bon.trainer._config_checks.adopt_activation_checkpointing`).
"""

import logging
import warnings


class _DropMessages(logging.Filter):
    """Drop the records of one logger whose message starts with one of `prefixes`."""

    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


_BITSANDBYTES_KERNEL = "kernels-community/quantization-bitsandbytes"


class _DropKernelTrustNotice(logging.Filter):
    """`kernels`' offline trust notice, only for the kernel bitsandbytes fetches at import."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Skipping publisher trust check") and _BITSANDBYTES_KERNEL in message)


def install() -> None:
    """Add the filters (idempotent: a filter already installed is not added twice)."""
    bnb_cpu = logging.getLogger("bitsandbytes.backends.cpu.ops")
    if not any(isinstance(f, _DropMessages) for f in bnb_cpu.filters):
        bnb_cpu.addFilter(_DropMessages("Failed to load CPU gemm_4bit_forward from kernels-community"))
    kernels_hub = logging.getLogger("kernels._internals.hf_hub")
    if not any(isinstance(f, _DropKernelTrustNotice) for f in kernels_hub.filters):
        kernels_hub.addFilter(_DropKernelTrustNotice())
    warnings.filterwarnings(
        "ignore",
        message=r"`(is_)?gradient_checkpointing(_enable|_disable)?` is deprecated and will be removed in v6",
        category=FutureWarning,
        module=r"transformers\.modeling_utils",
    )


install()

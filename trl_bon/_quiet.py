"""Silence known-spurious library messages at their source (one exact filter each), so `trl-bon` prints only what a
user can act on. Imported by `trl_bon/__init__.py` before TRL, transformers or bitsandbytes.

- **bitsandbytes** on AVX512-BF16 CPUs tries at import to fetch a 4-bit CPU kernel from the Hub through `kernels`;
  offline it logs wrong `pip install kernels` advice and `kernels` a trust notice, then falls back to its own kernel.
- **transformers ≥ 5.25** renamed `gradient_checkpointing*` to `activation_checkpointing*`; TRL 1.16 and PEFT call the
  old names on every generation step, a `FutureWarning` no user can fix (our configs use the new field name).
"""

import logging
import warnings


class _Drop(logging.Filter):
    """Drop the records whose message starts with `prefix` and contains `part`."""

    def __init__(self, prefix: str, part: str = ""):
        super().__init__()
        self.prefix, self.part = prefix, part

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith(self.prefix) and self.part in message)


FILTERS = {  # logger -> what it drops: bitsandbytes' kernel advice, and `kernels`' trust notice for that kernel only
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward from kernels-community",),
    "kernels._internals.hf_hub": ("Skipping publisher trust check", "kernels-community/quantization-bitsandbytes"),
}


def install() -> None:
    """Add the filters (idempotent)."""
    for name, drop in FILTERS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in logger.filters):
            logger.addFilter(_Drop(*drop))
    warnings.filterwarnings(
        "ignore",
        message=r"`(is_)?gradient_checkpointing(_enable|_disable)?` is deprecated and will be removed in v6",
        category=FutureWarning,
        module=r"transformers\.modeling_utils",
    )


install()

"""Checks shared by the trl-bon configs."""

import warnings


def warn_if_bf16_on_cpu(args) -> None:
    """Warn when TRL's default `bf16=True` would train on a CPU.

    TRL's configs default to bf16, which is right on a GPU but makes CPU matmuls many times slower than fp32 (a
    SmolLM2-135M J-BOND step took 80 s instead of 11 s on a 2-core CPU).
    """
    if args.bf16 and args.device.type == "cpu":
        warnings.warn(
            "`bf16=True` on a CPU: bf16 matmuls are many times slower than fp32 on most CPUs. Pass `bf16=False` "
            "(`--bf16 False` on the command line) to train in fp32.",
            UserWarning,
            stacklevel=3,
        )


DISABLE_DROPOUT_HELP = (
    "Must stay True: dropout draws a different mask in each forward, so the importance ratio of the first (and only) "
    "update is not 1 and RLOO's clip zeroes the gradient of whole rows."
)


def check_dropout_disabled(args) -> None:
    """Reject `disable_dropout=False` (RLOO's default), which would score `old_logps` and the loss under different
    dropout masks: the importance ratio of a one-update-per-generation step would then not be 1."""
    if not args.disable_dropout:
        raise ValueError(
            "`disable_dropout=False`: with dropout on, `old_logps` and the loss forward draw different dropout masks, "
            "so the importance ratio is not 1 and RLOO's clip zeroes whole rows (and the KL terms are noisy). Set "
            "`disable_dropout=True` (the default here)."
        )

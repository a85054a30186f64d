"""`BoNParser`: TRL's `TrlParser` with a key check in front, one-line errors and a `--help` that starts with Best-of-N.

`TrlParser.set_defaults_with_config` copies YAML values into the parser's defaults as they are: a misspelt key is
returned as a "remaining string" that TRL's scripts drop (`fail_with_unknown_args=False`), and `max_steps: 2.7` or a
list-valued `learning_rate` reach the config unchecked. Here every key must be a field of the parser's dataclasses (or
a flag of `accelerate launch`, which `trl-bon` forwards), and every value is parsed as the flag `--key=value` would be,
so argparse applies the option's own type and choices; the error names the key and the closest valid name — before
any model is loaded, in-process and under `accelerate launch`. Only public APIs: dataclass fields and type hints,
`parse_known_args`, `format_help`, and `HfArgumentParser`'s documented `_argument_group_name` for the help groups.
"""

import argparse
import dataclasses
import difflib
import os
import re
import sys
import typing

from trl import TrlParser

from trl_bon.scripts.utils import BoNScriptArguments


class ConfigError(ValueError):
    """A `--config` YAML key that no option accepts, or a value of the wrong type."""


HELP_PREAMBLE = """\
Every option below is a command-line flag and a key of the `--config FILE.yaml` file (plus `env:` for environment
variables); command-line flags override the file. Unknown keys and values of the wrong type are errors."""

LAUNCH_HELP = """\
Launch: flags of `accelerate launch` pass through (`--num_processes 2`, `--config_file
recipes/accelerate/multi_gpu.yaml`, `--accelerate_config zero3` for a config shipped with TRL). One process runs in
this Python process, without a relaunch; several run under `accelerate launch`, or under `torchrun` when there is no
GPU (accelerate runs CPU processes only through MPI). `TRL_BON_LAUNCH=0` always runs in this process."""

#: Options (name prefixes) that only make sense when training: hidden from `--help` of parsers without a config.
TRAINING_ONLY_OPTIONS = ("use_peft", "lora_", "use_rslora", "use_dora", "dataset_train_split", "ignore_bias_buffers")
MODEL_HELP = (
    "π_ref, the reference (SFT) policy: a Hub id or a local folder. Training starts from it and measures the KL to "
    "it; `trl-bon eval` compares checkpoints and Best-of-N samples with it."
)


def accelerate_launch_options() -> set[str]:
    """Names (without dashes, `-` read as `_`) of the flags of `accelerate launch`, read from its `--help`."""
    from accelerate.commands.launch import launch_command_parser

    help_text = launch_command_parser().format_help()
    return {name.replace("-", "_") for name in re.findall(r"(?<![\w-])--([A-Za-z][\w-]*)", help_text)}


def closest(name: str, candidates) -> str:
    """` (did you mean `--x`?)` for the closest candidate, or `""`."""
    match = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean `--{match[0]}`?)" if match else ""


def _accepts(hint, container: type) -> bool:
    """Whether a type hint admits `container` values (`dict`, `list`), e.g. `dict[str, Any] | str | None`."""
    if hint is container or typing.get_origin(hint) is container:
        return True
    return any(_accepts(arg, container) for arg in typing.get_args(hint))


def _type_name(hint) -> str:
    return getattr(hint, "__name__", str(hint))


class BoNParser(TrlParser):
    """`TrlParser` whose `--config` keys and values are checked like command-line flags.

    Parsing runs the TRL version guard (`check_trl_version`): a TRL outside the tested range warns before anything
    runs. Building one does not, so `--help` does not import TRL's trainer internals.

    Args:
        dataclass_types: as for [`~trl.TrlParser`].
        **kwargs: passed to `argparse.ArgumentParser` (`prog`, …). Abbreviated flags are off (`allow_abbrev=False`):
            with a thousand options, a prefix silently picking one is a typo waiting to happen.
    """

    def __init__(self, dataclass_types, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("usage", "%(prog)s [--config FILE.yaml] [--option VALUE ...]")
        kwargs.setdefault("description", HELP_PREAMBLE)
        kwargs.setdefault("formatter_class", _HelpFormatter)
        kwargs.setdefault("exit_on_error", False)  # a bad value raises, so a YAML file's problems are gathered
        super().__init__(dataclass_types, **kwargs)
        self.type_hints = {}  # every option (= field) of the parser and its type
        for dtype in self.dataclass_types:
            hints = typing.get_type_hints(dtype)
            self.type_hints.update({f.name: hints[f.name] for f in dataclasses.fields(dtype) if f.init})

    # --- strict `--config` ---------------------------------------------------------------------------------------

    def set_defaults_with_config(self, **config) -> list[str]:
        """Check and convert every key, then set the defaults; return the `accelerate launch` keys as flags."""
        problems, converted, launcher = [], {}, None
        for key, value in config.items():
            if key in self.type_hints:
                try:
                    converted[key] = self._convert(key, value)
                except ConfigError as error:
                    problems.append(f"`{key}: {value!r}`: {error}")
                except argparse.ArgumentError as error:
                    expected = _type_name(self.type_hints[key])
                    problems.append(f"`{key}: {value!r}` is not a valid {expected} ({error})")
                continue
            launcher = accelerate_launch_options() if launcher is None else launcher
            if key not in launcher:
                problems.append(f"unknown key `{key}`{closest(key, list(self.type_hints) + sorted(launcher))}")
        if problems:
            raise ConfigError("invalid --config file: " + "; ".join(problems))
        remaining = super().set_defaults_with_config(**converted)
        return remaining + [item for key in config if key not in converted for item in (f"--{key}", str(config[key]))]

    def _convert(self, key: str, value):
        """`value` as the flag would give it (argparse applies the option's type and choices to each element)."""
        hint = self.type_hints[key]
        if value is None:
            return None
        entry = next((arg for arg in typing.get_args(hint) if dataclasses.is_dataclass(arg)), None)
        if entry is not None:  # `datasets:` entries are mappings of a dataclass's fields
            names = {f.name for f in dataclasses.fields(entry)}
            for item in value if isinstance(value, list) else [value]:
                if not isinstance(item, dict):
                    raise ConfigError(f"expected a mapping of {entry.__name__} fields")
                for unknown in sorted(set(item) - names)[:1]:
                    raise ConfigError(f"unknown field `{unknown}`{closest(unknown, names)} of {entry.__name__}")
            return value
        if isinstance(value, dict) and _accepts(hint, dict):
            return value
        if isinstance(value, (dict, list)) and not _accepts(hint, list):
            raise ConfigError(f"expected a single {_type_name(hint)}, got a {type(value).__name__}")
        if isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
            raise ConfigError(f"expected a {_type_name(hint)}")
        strings = [str(item) for item in value] if isinstance(value, list) else [str(value)]
        flags = [f"--{key}={strings[0]}"] if len(strings) == 1 else [f"--{key}", *strings]
        return getattr(self.parse_known_args(flags)[0], key)

    def parse_args_and_config(self, args=None, return_remaining_strings: bool = False, **kwargs):
        """TRL's `parse_args_and_config`, with command-line flags checked before any config object is built.

        With `return_remaining_strings=True` (how `trl-bon` separates the `accelerate launch` flags), only flags of
        `accelerate launch` may remain; otherwise none may. A `ValueError` of a config's `__post_init__` (e.g.
        `mode: bondd`, or bf16 without a GPU) is printed as an error message, without a traceback.
        """
        import yaml

        from trl_bon._trl_compat import check_trl_version

        check_trl_version()  # every command parses first: warn before anything runs on an untested TRL
        args = list(sys.argv[1:] if args is None else args)
        self.check_flags(args, launcher=return_remaining_strings)
        try:
            return super().parse_args_and_config(args, return_remaining_strings=return_remaining_strings, **kwargs)
        except (ValueError, argparse.ArgumentError) as error:  # a bad key or value, a `__post_init__` check
            self.error(str(error))
        except yaml.YAMLError as error:
            self.error(
                f"--config {args[args.index('--config') + 1]} is not valid YAML: {' '.join(str(error).split())}"
            )

    def check_flags(self, args: list[str], launcher: bool) -> None:
        """Parse the flags alone (types, choices) and refuse unknown ones, before dataclasses run `__post_init__`."""
        if "--config" in args:
            index = args.index("--config")
            if index + 1 >= len(args) or not os.path.isfile(args[index + 1]):
                self.error(f"--config needs the path of a YAML file, got {args[index + 1 : index + 2] or 'nothing'}")
            args = args[:index] + args[index + 2 :]
        try:
            _, unknown = self.parse_known_args(args)
        except argparse.ArgumentError as error:
            self.error(str(error))
        allowed = accelerate_launch_options() | {"accelerate_config"} if launcher and unknown else set()
        self.suggestions = allowed
        for token in unknown:
            if token.startswith("-") and token.lstrip("-").split("=")[0].replace("-", "_") not in allowed:
                self.error(f"unrecognized arguments: {token}")

    # --- one-line errors ---------------------------------------------------------------------------------------

    def error(self, message: str):
        """One line naming the bad flag and the closest valid one, not a usage dump of a thousand options."""
        if message.startswith("unrecognized arguments:"):
            flags = [token for token in message.split(":", 1)[1].split() if token.startswith("--")]
            known = set(self.type_hints) | getattr(self, "suggestions", set())
            message += "".join(closest(flag.lstrip("-").split("=")[0], known) for flag in flags[:1])
        self.exit(2, f"{self.prog}: error: {message}\nRun `{self.prog} --help` for the options.\n")

    # --- help ---------------------------------------------------------------------------------------------------

    def format_help(self) -> str:
        """The options grouped by role, Best-of-N first; training-only options hidden from non-training parsers.

        Written by a parser over the same fields, one dataclass per group (`HfArgumentParser` puts a dataclass with
        an `_argument_group_name` in an argument group of that title).
        """
        from transformers import HfArgumentParser

        groups = sorted(self._help_groups(), key=lambda group: group[0])
        training = any(title.startswith("Best-of-N options") for _, title, _ in groups)
        by_name = {f.name: f for dtype in self.dataclass_types for f in dataclasses.fields(dtype) if f.init}
        dtypes = []
        for _, title, names in groups:
            if not training:
                title = title.replace("π_ref, LoRA and quantization", "π_ref and quantization")
            fields = [(name, self.type_hints[name], self._help_field(by_name[name], training)) for name in names]
            group = {"_argument_group_name": title}  # listed in _trl_compat (not imported: it loads TRL's trainers)
            dtypes.append(dataclasses.make_dataclass("Group", fields, kw_only=True, namespace=group))
        parser = HfArgumentParser(
            dtypes, prog=self.prog, usage=self.usage, description=self.description, formatter_class=_HelpFormatter
        )
        return parser.format_help()

    def _help_groups(self) -> list[tuple[int, str, list[str]]]:
        """`(rank, title, field names)` of each help group."""
        from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments

        groups = []
        for dtype in self.dataclass_types:
            names = [f.name for f in dataclasses.fields(dtype) if f.init]
            if issubclass(dtype, ScriptArguments):
                shared = {f.name for f in dataclasses.fields(BoNScriptArguments)}
                own = [n for n in names if n not in shared]  # e.g. eval's `checkpoints`, `bon_ns`
                if own:
                    groups.append((0, f"Options of this command ({dtype.__name__})", own))
                shared_names = [n for n in names if n in shared]
                groups.append((1, f"Script options: data, reward, prompts ({dtype.__name__})", shared_names))
            elif issubclass(dtype, ModelConfig):
                groups.append((2, "π_ref, LoRA and quantization (ModelConfig)", names))
            elif issubclass(dtype, DatasetMixtureConfig):
                groups.append((4, "Dataset mixture (a `datasets:` list in the YAML)", names))
            else:
                base = next(c for c in dtype.__mro__ if c.__module__.split(".")[0] != "trl_bon")
                inherited = {f.name for f in dataclasses.fields(base)} if dataclasses.is_dataclass(base) else set()
                groups.append((0, f"Best-of-N options ({dtype.__name__})", [n for n in names if n not in inherited]))
                inherited = [n for n in names if n in inherited]
                groups.append((3, f"Training options inherited from TRL ({base.__name__})", inherited))
        return groups

    def _help_field(self, source: dataclasses.Field, training: bool) -> dataclasses.Field:
        """A copy of `source` with this parser's default and the help shown for it."""
        metadata = dict(source.metadata)
        if source.name == "model_name_or_path":
            metadata["help"] = MODEL_HELP
        if not training and source.name.startswith(TRAINING_ONLY_OPTIONS):
            metadata["help"] = argparse.SUPPRESS
        default = self.get_default(source.name)  # `set_defaults` of a command (cache-ref-rewards' num_candidates)
        if type(default).__hash__ is None:  # a list or dict default: dataclasses take it from a factory
            return dataclasses.field(default_factory=lambda: default, metadata=metadata)
        return dataclasses.field(default=default, metadata=metadata)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the preamble's line breaks; show defaults (as `HfArgumentParser` does)."""


def training_parser(script_arguments_class, config_class, prog: str | None = None) -> BoNParser:
    """`BoNParser((script arguments, config_class, ModelConfig, DatasetMixtureConfig))`, as TRL's scripts build it."""
    from trl import DatasetMixtureConfig, ModelConfig

    return BoNParser((script_arguments_class, config_class, ModelConfig, DatasetMixtureConfig), prog=prog)

"""`BoNParser`: TRL's `TrlParser` with a key check in front, one-line errors and a `--help` that starts with Best-of-N.
`TrlParser` copies `--config` YAML values into the defaults unchecked and drops misspelt keys; here every key must be
an option (or a flag of `accelerate launch`) and every value is parsed as the flag `--key=value` would be."""

import argparse
import dataclasses
import difflib
import functools
import os
import sys
import typing

from trl import TrlParser

from trl_bon.scripts.utils import BoNScriptArguments


HELP_PREAMBLE = """\
Every option below is a command-line flag and a key of the `--config FILE.yaml` file (plus `env:` for environment
variables); command-line flags override the file. Unknown keys and values of the wrong type are errors."""

#: Options (name prefixes) that only make sense when training: hidden from `--help` of parsers without a config.
TRAINING_ONLY_OPTIONS = ("use_peft", "lora_", "use_rslora", "use_dora", "dataset_train_split", "ignore_bias_buffers")
MODEL_HELP = (
    "π_ref, the reference (SFT) policy: a Hub id or a local folder. Training starts from it and measures the KL to "
    "it; `trl-bon eval` compares checkpoints and Best-of-N samples with it."
)


@functools.cache
def accelerate_launch_options() -> dict[str, bool]:
    """The flags of `accelerate launch` (without dashes, `-` read as `_`), each with whether it takes no value."""
    from accelerate.commands.launch import launch_command_parser

    actions = launch_command_parser()._actions
    return {flag[2:].replace("-", "_"): a.nargs == 0 for a in actions for flag in a.option_strings if flag[:2] == "--"}


def closest(name: str, candidates) -> str:
    """` (did you mean `--x`?)` for the closest candidate, or `""`."""
    match = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean `--{match[0]}`?)" if match else ""


def _name(hint) -> str:
    return getattr(hint, "__name__", str(hint))


def _accepts(hint, container: type) -> bool:
    """Whether a type hint admits `container` values (`dict`, `list`), e.g. `dict[str, Any] | str | None`."""
    if hint is container or typing.get_origin(hint) is container:
        return True
    return any(_accepts(arg, container) for arg in typing.get_args(hint))


class BoNParser(TrlParser):
    """`TrlParser` whose `--config` keys and values are checked like flags, and whose `--help` groups the options by
    role, Best-of-N first (parsing still returns the `dataclass_types` given). Abbreviated flags are off: among a
    thousand options, a prefix silently picking one is a typo waiting to happen."""

    def __init__(self, dataclass_types, **kwargs):
        self.type_hints = {}  # every option (= field) of the parser and its type
        for dtype in dataclass_types:
            hints = typing.get_type_hints(dtype)
            self.type_hints.update({f.name: hints[f.name] for f in dataclasses.fields(dtype) if f.init})
        usage = "%(prog)s [--config FILE.yaml] [--option VALUE ...]"
        # `exit_on_error=False`: a bad value raises, so all of a YAML file's problems are gathered
        defaults = dict(allow_abbrev=False, usage=usage, description=HELP_PREAMBLE, exit_on_error=False)
        defaults["formatter_class"] = _HelpFormatter
        super().__init__(self._help_groups(dataclass_types), **{**defaults, **kwargs})
        self.dataclass_types = list(dataclass_types)

    def _help_groups(self, dataclass_types) -> list[type]:
        """One dataclass per help group, holding copies of the options' fields, in the order `--help` shows them."""
        from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments

        shared = {f.name for f in dataclasses.fields(BoNScriptArguments)}
        roles = (ScriptArguments, ModelConfig, DatasetMixtureConfig)
        training = not all(issubclass(dtype, roles) for dtype in dataclass_types)
        groups = []  # (rank, title, field names)
        for dtype in dataclass_types:
            names, title = [f.name for f in dataclasses.fields(dtype) if f.init], dtype.__name__
            if issubclass(dtype, ScriptArguments):  # eval's own options (`checkpoints`, …), then the shared ones
                groups.append((0, f"Options of this command ({title})", [n for n in names if n not in shared]))
                title = f"Script options: data, reward, prompts ({title})"
                groups.append((1, title, [n for n in names if n in shared]))
            elif issubclass(dtype, ModelConfig):
                groups.append((2, f"π_ref{', LoRA' if training else ''} and quantization ({title})", names))
            elif issubclass(dtype, DatasetMixtureConfig):
                groups.append((4, "Dataset mixture (a `datasets:` list in the YAML)", names))
            else:
                base = next(c for c in dtype.__mro__ if c.__module__.split(".")[0] != "trl_bon")
                inherited = {f.name for f in dataclasses.fields(base)}
                groups.append((0, f"Best-of-N options ({title})", [n for n in names if n not in inherited]))
                title = f"Training options inherited from TRL ({base.__name__})"
                groups.append((3, title, [n for n in names if n in inherited]))
        sources = {f.name: f for dtype in dataclass_types for f in dataclasses.fields(dtype)}

        def option(name: str) -> tuple:  # a copy of the field, with the help shown for it
            source, metadata = sources[name], dict(sources[name].metadata)
            if name == "model_name_or_path":
                metadata["help"] = MODEL_HELP
            if not training and name.startswith(TRAINING_ONLY_OPTIONS):
                metadata["help"] = argparse.SUPPRESS
            default = dict(default=source.default, default_factory=source.default_factory)
            return name, self.type_hints[name], dataclasses.field(**default, metadata=metadata)

        return [
            dataclasses.make_dataclass(
                "Group", [option(n) for n in names], kw_only=True, namespace={"_argument_group_name": title}
            )
            for _, title, names in sorted(groups, key=lambda group: group[0])
        ]

    def set_defaults_with_config(self, **config) -> list[str]:
        """Check and convert every key, then set the defaults; return the `accelerate launch` keys as flags."""
        problems, converted = [], {}
        for key, value in config.items():
            if key in self.type_hints:
                try:
                    converted[key] = self._convert(key, value)
                except ValueError as error:
                    problems.append(f"`{key}: {value!r}`: {error}")
                except argparse.ArgumentError as error:
                    problems.append(f"`{key}: {value!r}` is not a valid {_name(self.type_hints[key])} ({error})")
            elif key not in accelerate_launch_options():
                problems.append(f"unknown key `{key}`{closest(key, [*self.type_hints, *accelerate_launch_options()])}")
        if problems:
            raise ValueError("invalid --config file: " + "; ".join(problems))
        flags = []  # the `accelerate launch` keys; a switch stands alone (`cpu: true` is `--cpu`, `cpu: false` none)
        for key, value in config.items():
            switch = accelerate_launch_options().get(key)
            if key not in converted and (value or not switch):
                flags += [f"--{key}"] if switch else [f"--{key}", str(value)]
        return super().set_defaults_with_config(**converted) + flags

    def _convert(self, key: str, value):
        """`value` as the flag would give it (argparse applies the option's type and choices to each element)."""
        hint = self.type_hints[key]
        entry = next((arg for arg in typing.get_args(hint) if dataclasses.is_dataclass(arg)), None)
        if entry is not None:  # `datasets:` entries are mappings of a dataclass's fields
            names = {f.name for f in dataclasses.fields(entry)}
            for item in value if isinstance(value, list) else [value]:
                if not isinstance(item, dict):
                    raise ValueError(f"expected a mapping of {entry.__name__} fields")
                for unknown in sorted(set(item) - names)[:1]:
                    raise ValueError(f"unknown field `{unknown}`{closest(unknown, names)} of {entry.__name__}")
            return value
        if value is None or (isinstance(value, dict) and _accepts(hint, dict)):
            return value
        if isinstance(value, (dict, list)) and not _accepts(hint, list):
            raise ValueError(f"expected a single {_name(hint)}, got a {type(value).__name__}")
        if isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
            raise ValueError(f"expected a {_name(hint)}")
        strings = [str(item) for item in value] if isinstance(value, list) else [str(value)]
        flags = [f"--{key}={strings[0]}"] if len(strings) == 1 else [f"--{key}", *strings]
        return getattr(self.parse_known_args(flags)[0], key)

    def parse_args_and_config(self, args=None, return_remaining_strings: bool = False, **kwargs):
        """TRL's `parse_args_and_config`, flags checked first (only launch flags may remain); errors on one line."""
        import yaml

        from trl_bon._trl_compat import check_trl_version

        check_trl_version()  # every command parses first: warn before anything runs on an untested TRL
        args = list(sys.argv[1:] if args is None else args)
        flags = args
        if "--config" in args:
            index = args.index("--config")
            if index + 1 >= len(args) or not os.path.isfile(args[index + 1]):
                self.error(f"--config needs the path of a YAML file, got {args[index + 1 : index + 2] or 'nothing'}")
            flags = args[:index] + args[index + 2 :]
        try:
            _, unknown = self.parse_known_args(flags)  # types and choices, before any `__post_init__` runs
            launcher = return_remaining_strings and unknown
            allowed = {*accelerate_launch_options(), "accelerate_config"} if launcher else set()
            for token in unknown:
                if token.startswith("-") and token.lstrip("-").split("=")[0].replace("-", "_") not in allowed:
                    hint = closest(token.lstrip("-").split("=")[0], {*self.type_hints, *allowed})
                    self.error(f"unrecognized arguments: {token}{hint}")
            return super().parse_args_and_config(args, return_remaining_strings=return_remaining_strings, **kwargs)
        except (ValueError, argparse.ArgumentError) as error:  # a bad key or value, a `__post_init__` check
            self.error(str(error))
        except yaml.YAMLError as error:
            self.error(f"--config {args[index + 1]} is not valid YAML: {' '.join(str(error).split())}")

    def error(self, message: str):
        """One line, not a usage dump of a thousand options."""
        self.exit(2, f"{self.prog}: error: {message}\nRun `{self.prog} --help` for the options.\n")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the preamble's line breaks; show defaults (as `HfArgumentParser` does)."""


def training_parser(script_arguments_class, config_class, prog: str | None = None) -> BoNParser:
    """`BoNParser((script arguments, config_class, ModelConfig, DatasetMixtureConfig))`, as TRL's scripts build it."""
    from trl import DatasetMixtureConfig, ModelConfig

    return BoNParser((script_arguments_class, config_class, ModelConfig, DatasetMixtureConfig), prog=prog)

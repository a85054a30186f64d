"""`BoNParser`: TRL's `TrlParser` made strict, with a one-line error and a `--help` that starts with Best-of-N.

`TrlParser.set_defaults_with_config` copies YAML values into the parser's defaults as they are: a misspelt key is
returned as a "remaining string" that TRL's scripts drop (`fail_with_unknown_args=False`), and `max_steps: 2.7` or a
list-valued `learning_rate` reach the config unchecked. Here every key must be an option of the parser (or of
`accelerate launch`, which `trl-bon` forwards), every value is converted with the option's own argparse type, and the
error names the key and the closest valid name — before any model is loaded, in-process and under `accelerate launch`.
"""

import argparse
import dataclasses
import difflib
import os
import sys
import typing

from trl import TrlParser


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
    """Names (without dashes, `-` read as `_`) of the options of `accelerate launch`, which `trl-bon` forwards."""
    from accelerate.commands.launch import launch_command_parser

    return {
        option.lstrip("-").replace("-", "_")
        for action in launch_command_parser()._actions
        for option in action.option_strings
    }


def closest(name: str, candidates) -> str:
    """` (did you mean `--x`?)` for the closest candidate, or `""`."""
    match = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean `--{match[0]}`?)" if match else ""


def _accepts(hint, container: type) -> bool:
    """Whether a type hint admits `container` values (`dict`, `list`), e.g. `dict[str, Any] | str | None`."""
    if hint is container or typing.get_origin(hint) is container:
        return True
    return any(_accepts(arg, container) for arg in typing.get_args(hint))


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
        super().__init__(dataclass_types, **kwargs)
        self.type_hints = {}
        for dtype in self.dataclass_types:
            self.type_hints.update(typing.get_type_hints(dtype))
        self._group_options_for_help()

    # --- strict `--config` ---------------------------------------------------------------------------------------

    def set_defaults_with_config(self, **config) -> list[str]:
        """Check and convert every key, then set the defaults; return the `accelerate launch` keys as flags."""
        actions = {}
        for action in self._actions:  # the first action of a dest: `--flag`, not its `--no_flag` complement
            if action.option_strings:
                actions.setdefault(action.dest, action)
        problems, converted, launcher = [], {}, None
        for key, value in config.items():
            if key in actions:
                try:
                    converted[key] = self._convert(key, actions[key], value)
                except TypeError as error:
                    problems.append(f"`{key}: {value!r}`: {error}")
                except (ValueError, argparse.ArgumentTypeError) as error:
                    expected = _type_name(self.type_hints.get(key))
                    problems.append(f"`{key}: {value!r}` is not a valid {expected} ({error})")
                continue
            launcher = accelerate_launch_options() if launcher is None else launcher
            if key not in launcher:
                problems.append(f"unknown key `{key}`{closest(key, list(actions) + sorted(launcher))}")
        if problems:
            raise ConfigError("invalid --config file: " + "; ".join(problems))
        remaining = super().set_defaults_with_config(**converted)
        return remaining + [item for key in config if key not in actions for item in (f"--{key}", str(config[key]))]

    def _convert(self, key: str, action: argparse.Action, value):
        """`value` as the command line would give it: each element through the option's argparse `type`."""
        hint = self.type_hints.get(key)
        if value is None:
            return None
        if action.nargs in ("+", "*"):
            items = value if isinstance(value, list) else [value]
            return [self._convert_one(key, action, item) for item in items]
        if isinstance(value, (dict, list)):
            container = dict if isinstance(value, dict) else list
            if not _accepts(hint, container):
                raise TypeError(f"expected a single {_type_name(hint)}, got a {container.__name__}")
            return value
        return self._convert_one(key, action, value)

    def _convert_one(self, key, action, value):
        if dataclasses.is_dataclass(action.type):  # `datasets:` entries are mappings of a dataclass's fields
            if not isinstance(value, dict):
                raise TypeError(f"expected a mapping of {action.type.__name__} fields")
            names = {f.name for f in dataclasses.fields(action.type)}
            unknown = sorted(set(value) - names)
            if unknown:
                raise ValueError(f"unknown field `{unknown[0]}`{closest(unknown[0], names)} of {action.type.__name__}")
            return value
        if isinstance(value, (dict, list)):
            raise TypeError(f"expected a {_type_name(self.type_hints.get(key))}, got a {type(value).__name__}")
        converted = value if action.type is None else action.type(value if isinstance(value, str) else str(value))
        if action.choices is not None and converted not in action.choices:
            raise ValueError(f"expected one of {list(action.choices)}")
        return converted

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
        except ValueError as error:  # a bad key or value, or a config's `__post_init__` check: no traceback
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
        _, unknown = self.parse_known_args(args)
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
            known = {option.lstrip("-") for action in self._actions for option in action.option_strings}
            known |= getattr(self, "suggestions", set())
            message += "".join(closest(flag.lstrip("-").split("=")[0], known) for flag in flags[:1])
        self.exit(2, f"{self.prog}: error: {message}\nRun `{self.prog} --help` for the options.\n")

    # --- help ---------------------------------------------------------------------------------------------------

    def _group_options_for_help(self) -> None:
        """Group the options by role, Best-of-N first; hide training-only options from non-training parsers."""
        from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments

        groups = []
        for dtype in self.dataclass_types:
            names = [f.name for f in dataclasses.fields(dtype) if f.init]
            if issubclass(dtype, ScriptArguments):
                from trl_bon.scripts.utils import BoNScriptArguments

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
                own = [n for n in names if n not in inherited]
                groups.append((0, f"Best-of-N options ({dtype.__name__})", own))
                groups.append((3, f"Training options inherited from TRL ({base.__name__})", sorted(inherited)))
        training = any(title.startswith("Best-of-N options") for _, title, _ in groups)
        if not training:
            groups = [
                (r, t.replace("π_ref, LoRA and quantization", "π_ref and quantization"), n) for r, t, n in groups
            ]
        new_groups = []
        for _, title, names in sorted(groups, key=lambda g: g[0]):
            group = self.add_argument_group(title)
            self._action_groups.remove(group)
            new_groups.append(group)
            for action in list(self._optionals._group_actions):
                if action.dest in names:
                    self._optionals._group_actions.remove(action)
                    group._group_actions.append(action)
                    if action.dest == "model_name_or_path":
                        action.help = MODEL_HELP
                    if not training and action.dest.startswith(TRAINING_ONLY_OPTIONS):
                        action.help = argparse.SUPPRESS
        self._action_groups.extend(new_groups)


def _type_name(hint) -> str:
    return getattr(hint, "__name__", str(hint))


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the preamble's line breaks; show defaults (as `HfArgumentParser` does)."""

"""One ledger for everything trl-bon saves and later reuses: a JSON *record* of what the result depends on, and one
check, [`refuse_if_stale`] ("One ledger for everything reused" in docs/reliability.md)."""

import json
import math
import os
from pathlib import Path


LABEL = "name_or_path"


def _same(a, b) -> bool:
    """Equal, with numbers (alone or in lists) equal within a relative 1e-9, and `True` not equal to `1`."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def differences(saved: dict, current: dict, keys=None, prefix: str = "") -> list[tuple[str, object, object, str]]:
    """`(dotted field, saved value, current value, note)` for every field of `current` (or of `keys`) that `saved`
    does not match; a nested `name_or_path` is never compared but names an object that differs (fields in the note)."""
    found = []
    for key in current if keys is None else keys:
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = differences(a, b, sorted((set(a) | set(b)) - {LABEL}), prefix=f"{prefix}{key}.")
            if inner and LABEL in a and LABEL in b:
                fields = ", ".join(field.removeprefix(f"{prefix}{key}.") for field, *_ in inner)
                found.append((f"{prefix}{key}", a[LABEL], b[LABEL], f" ({fields} differ)"))
            else:
                found += inner
        elif not _same(a, b):
            found.append((f"{prefix}{key}", a, b, ""))
    return found


class StaleResultError(ValueError):
    """A saved result (checkpoint, cache, round data, anchor) recorded for other settings than this run's."""


def refuse_if_stale(
    saved: dict, current: dict, *, subject: str, escape: str, saved_as: str = "saved", current_as: str = "this run"
) -> None:
    """Raise a [`StaleResultError`] if `saved` differs from `current` (see [`differences`]), reading `<subject> other
    settings than this run (fields that differ: 'a'): a: <saved_as> X, <current_as> Y. <escape>`."""
    found = differences(saved, current)
    if found:
        fields = ", ".join(repr(name) for name in dict.fromkeys(field.split(".")[0] for field, *_ in found))
        raise StaleResultError(
            f"{subject} other settings than this run (fields that differ: {fields}): "
            + "; ".join(f"{field}: {saved_as} {a!r}, {current_as} {b!r}{note}" for field, a, b, note in found)
            + f". {escape}"
        )


def write_atomically(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temporary file renamed into place: the file exists whole or not at all."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_record(path: str | os.PathLike, record: dict) -> None:
    """Write `record` as JSON to `path`, atomically."""
    write_atomically(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")


def read_record(path: str | os.PathLike, what: str, fix: str) -> dict:
    """The JSON object in `path`; a `ValueError` naming the file (`what`, then `fix`) if it is not one."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"The {what} {path} is damaged ({error}). {fix}") from error
    if not isinstance(record, dict):
        raise ValueError(f"The {what} {path} is damaged (not a JSON object). {fix}")
    return record

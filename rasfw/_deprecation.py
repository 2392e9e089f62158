"""Old spellings of settings and arguments that still work, each with a one-line notice naming the new one."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

RENAMED_KEYS = {
    "execution.backend": "execution.compile_backend",  # `backend` is the token backend (`backend=torch|triton`)
    "eval.baseline_cache": "eval.baseline_store",  # `cache` is the step cache (`cache=`)
}
"""Config keys that were renamed, old -> new. The old key still works in overrides and config files."""

_OVERRIDE = re.compile(r"^(\+\+|\+|~)?([\w.]+)(=.*)?$", re.S)
_SHOWN: set[tuple[str, str]] = set()  # notices already shown in this process (a notice, not run state)


def deprecated(old: str, new: str) -> None:
    """Tell the user, once per process, that `old` still works but is now spelt `new` (one line on stderr).

    Args:
        old: the old spelling, e.g. "execution.name".
        new: what to write instead, e.g. "execution._target_".
    """
    if (old, new) in _SHOWN:
        return
    _SHOWN.add((old, new))
    message = f"deprecated: {old} is now {new}; the old spelling still works for now"
    print(message, file=sys.stderr, flush=True)


def renamed_overrides(args: Sequence[str]) -> list[str]:
    """The command line's `args` with every override of a renamed key (`RENAMED_KEYS`) spelt the new way.

    `execution.backend=aot_eager` becomes `execution.compile_backend=aot_eager` (a notice says so); a `+` in front
    is dropped, as the new key is already in the config. Other arguments are kept as they are.

    Args:
        args: the command line's arguments (overrides and Hydra's flags).
    """
    out = []
    for arg in args:
        match = _OVERRIDE.match(arg)
        if match and match.group(2) in RENAMED_KEYS:
            prefix, key, rest = match.group(1) or "", match.group(2), match.group(3) or ""
            deprecated(key, RENAMED_KEYS[key])
            arg = ("" if prefix == "+" else prefix) + RENAMED_KEYS[key] + rest
        out.append(arg)
    return out


def renamed_setting(node: dict, old: str, new: str, setting: str) -> None:
    """Move `node[old]` (a config file's old key) to `node[new]` in place, with a notice; both set is an error.

    Args:
        node: the settings of one config node, as plain data (e.g. `eval`'s).
        old: the old key in it, e.g. "baseline_cache".
        new: the new key, e.g. "baseline_store".
        setting: the node's name in messages, e.g. "eval".

    Raises:
        ValueError: both keys are set (not null).
    """
    if old not in node:
        return
    value = node.pop(old)
    deprecated(f"{setting}.{old}", f"{setting}.{new}")
    if node.get(new) is not None and value is not None and node[new] != value:
        raise ValueError(f"{setting}.{old} is the old name of {setting}.{new}; set only {setting}.{new}")
    if value is not None:
        node[new] = value

"""One-line notices for old spellings of settings and arguments that still work."""

from __future__ import annotations

import sys

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

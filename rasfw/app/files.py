"""How the commands write their outputs: each file whole or not at all, and one run per output folder.

A file is written under a temporary name beside it and renamed when complete (`written`), so a failure or a full
disk mid-run leaves no truncated image or summary under the real name; `summary.json` is written last, so a job
folder that holds one is complete. `run_lock` refuses a second run writing the same folder at the same time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK = ".rasfw.lock"
"""The file that marks an output folder as being written, holding the writer's process id."""


@contextlib.contextmanager
def written(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` (same folder and suffix) to write to; renamed to `path` when the block ends
    without an error, removed otherwise."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):  # gone after the rename, or never made (its folder could not be)
            tmp.unlink()


def save_image(image: Any, path: str | Path, **options: Any) -> None:
    """`image.save(path, **options)` (a PIL image; the format from the suffix), whole or not at all."""
    with written(path) as tmp:
        image.save(tmp, **options)


def write_text(path: str | Path, text: str) -> None:
    """`path.write_text(text)`, whole or not at all."""
    with written(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def run_lock(folder: str | Path, setting: str = "hydra.run.dir") -> Iterator[None]:
    """Hold `folder` for this process while the block runs.

    Raises:
        ValueError: another live process holds it (one line naming `setting`); a lock left by a process that
            no longer runs is taken over.
    """
    lock = Path(folder) / LOCK
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        refuse_if_held(folder, setting)  # a live holder: refused
        lock.write_text(str(os.getpid()))  # left by a run that no longer exists: taken over
    else:
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def refuse_if_held(folder: str | Path, setting: str = "hydra.run.dir") -> None:
    """Raise `ValueError` (one line naming `setting`) if another live process holds `folder` (`run_lock`)."""
    holder = _holder(Path(folder) / LOCK)
    if holder is not None and holder != os.getpid() and _alive(holder):
        raise ValueError(
            f"{setting}={folder}: another run (process {holder}) is writing this folder; wait for it to end or "
            f"give this run another {setting}"
        )


def _holder(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    return True

"""Outputs are written whole or not at all, and one run holds an output folder at a time (`rasfw.app.files`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PIL import Image

from rasfw.app.files import LOCK, run_lock, save_image, write_text, written


def test_a_failure_while_writing_leaves_neither_the_file_nor_a_partial_one(tmp_path):
    target = tmp_path / "summary.json"
    with pytest.raises(OSError, match="disk full"):
        with written(target) as tmp:
            tmp.write_text('{"half": ')
            raise OSError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_replaced_only_when_the_new_one_is_complete(tmp_path):
    target = tmp_path / "grid.png"
    save_image(Image.new("RGB", (4, 4), "red"), target)
    with pytest.raises(RuntimeError):
        with written(target) as tmp:
            Image.new("RGB", (8, 8)).save(tmp)
            raise RuntimeError("stopped")
    assert Image.open(target).size == (4, 4) and [p.name for p in tmp_path.iterdir()] == ["grid.png"]
    write_text(tmp_path / "a.md", "done\n")
    assert (tmp_path / "a.md").read_text() == "done\n"


def test_a_second_run_in_the_same_folder_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / LOCK).write_text(str(holder.pid))
        with pytest.raises(ValueError, match=rf"hydra.run.dir={tmp_path}: another run \(process {holder.pid}\)"):
            with run_lock(tmp_path):
                pass
        assert (tmp_path / LOCK).read_text() == str(holder.pid)  # the other run keeps its lock
    finally:
        holder.kill()
        holder.wait()
    with run_lock(tmp_path):  # that process is gone: its lock is stale
        assert (tmp_path / LOCK).read_text() == str(os.getpid())
    assert not (tmp_path / LOCK).exists()


def test_the_cli_refuses_a_folder_another_run_is_writing(tmp_path, capsys):
    from rasfw.app.cli import main

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / LOCK).write_text(str(holder.pid))
        with pytest.raises(SystemExit) as info:
            main(["steps=2", "progress=false", "compare_dense=false", "hydra/job_logging=none",
                  "hydra/hydra_logging=none", f"hydra.run.dir={tmp_path}"])  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "another run" in err and "\n" not in err, err
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / ".hydra").exists()  # refused before Hydra

"""Renamed keys and arguments: the old spelling still works and prints one line naming the new one."""

from __future__ import annotations

import pytest

from rasfw._deprecation import RENAMED_KEYS, renamed_overrides, renamed_setting
from rasfw.execution import CompiledExecution


@pytest.fixture(autouse=True)
def _fresh_notices(monkeypatch):
    monkeypatch.setattr("rasfw._deprecation._SHOWN", set())  # notices show once per process


def test_overrides_of_renamed_keys_are_spelt_the_new_way_with_one_notice_each(capsys):
    args = ["execution=compile", "execution.backend=aot_eager", "+eval.baseline_cache=/tmp/b", "backend=torch", "-m"]
    assert renamed_overrides(args) == [
        "execution=compile", "execution.compile_backend=aot_eager", "eval.baseline_store=/tmp/b", "backend=torch", "-m",
    ]  # fmt: skip
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"deprecated: {old} is now {new}; the old spelling still works for now" for old, new in RENAMED_KEYS.items()]
    assert renamed_overrides(["execution.backend=eager"]) == ["execution.compile_backend=eager"]
    assert capsys.readouterr().err == ""  # once per process


def test_a_config_files_old_key_moves_to_the_new_one():
    node = {"prompts": 4, "baseline_cache": "outputs/baselines", "baseline_store": None}
    renamed_setting(node, "baseline_cache", "baseline_store", "eval")
    assert node == {"prompts": 4, "baseline_store": "outputs/baselines"}
    with pytest.raises(ValueError, match="eval.baseline_cache is the old name of eval.baseline_store; set only"):
        renamed_setting({"baseline_cache": "a", "baseline_store": "b"}, "baseline_cache", "baseline_store", "eval")


def test_the_compile_executor_takes_its_old_backend_argument(capsys):
    executor = CompiledExecution(backend="aot_eager")
    assert executor.compile_backend == "aot_eager" and executor.describe()["compile_backend"] == "aot_eager"
    assert "deprecated: execution.backend is now execution.compile_backend" in capsys.readouterr().err

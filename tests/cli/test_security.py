"""Configs build only registered classes: no `_target_` a user or a shared YAML writes runs any code.

Each payload would have run through Hydra's `instantiate` (a nested `_target_` inside a value, or a
top-level one naming any callable). Each must exit with code 2 and one line naming the key, and leave the
file system as it was: no file created, truncated or copied.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rasfw.app.cli import main
from rasfw.build import build

QUIET = ["hydra/job_logging=none", "hydra/hydra_logging=none", "progress=false", "compare_dense=false"]


class _Evil:
    """Unpickling it creates a file: the proof that the pickle's code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.fixture
def files(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "hubconf.py").write_text(f"open({str(tmp_path / 'hub_ran')!r}, 'w').close()\ndef x():\n    return 0\n")
    torch.save(_Evil(str(tmp_path / "pickle_ran")), tmp_path / "evil.pt")
    return {"dir": tmp_path, "victim": victim, "copy": tmp_path / "copied.txt", "hub": hub}


def payloads(f) -> list[list[str]]:
    d, victim, copy = f["dir"], f["victim"], f["copy"]
    return [
        [f"ratio.value={{_target_:torch.load,f:{d / 'evil.pt'},weights_only:false}}"],
        [f"ratio.value={{_target_:torch.hub.load,repo_or_dir:{f['hub']},model:x,source:local,trust_repo:true}}"],
        [f"ratio.value={{_target_:builtins.open,file:{victim},mode:w}}"],
        [f"ratio.value={{_target_:shutil.copyfile,src:{victim},dst:{copy}}}"],
        [f"reset.steps=[4,{{_target_:builtins.open,file:{victim},mode:w}}]"],
        ["ratio._target_=builtins.open", f"+ratio.file={victim}", "+ratio.mode=w", "~ratio.value", "~ratio.warmup"],
        ["model._target_=shutil.copyfile", f"+model.src={victim}", f"+model.dst={copy}", "~model.weights",
         "~model.device", "~model.dtype"],  # fmt: skip
        ["sampler._target_=os.system", f"+sampler.command=touch {d / 'system_ran'}", "~sampler.high_ratio",
         "~sampler.kv_cache", "~sampler.kv_dtype"],  # fmt: skip
        ["+ratio._partial_=true"],
        [f"starvation.k={{_args_:[1],_target_:builtins.open,file:{victim},mode:w}}"],
    ]


def untouched(f) -> bool:
    d = f["dir"]
    return (
        f["victim"].read_text() == "keep me"
        and not f["copy"].exists()
        and not any((d / name).exists() for name in ("pickle_ran", "hub_ran", "system_ran"))
    )


@pytest.mark.parametrize("case", range(10))
def test_payload_exits_2_with_one_line_and_no_side_effect(case, files, capsys):
    overrides = payloads(files)[case]
    with pytest.raises(SystemExit) as info:
        main([*overrides, *QUIET, f"hydra.run.dir={files['dir'] / 'out'}"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert any(key in err for key in ("ratio", "model", "sampler", "reset", "starvation")), err
    assert untouched(files)
    assert not (files["dir"] / "out" / "summary.json").exists()


def test_payload_in_a_shared_experiment_yaml_is_refused(files):
    """The same gate holds for a config found through hydra.searchpath (an experiment file someone shared)."""
    shared = files["dir"] / "shared" / "experiment"
    shared.mkdir(parents=True)
    (shared / "evil.yaml").write_text(
        "# @package _global_\nratio:\n  value:\n    _target_: builtins.open\n"
        f"    file: {files['victim']}\n    mode: w\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "rasfw", f"hydra.searchpath=[file://{files['dir'] / 'shared'}]", "+experiment=evil",
         "progress=false"],  # fmt: skip
        capture_output=True, text=True, timeout=300, cwd=files["dir"],
        env={**os.environ, "RASFW_DEBUG": ""},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "error: ratio.value: a nested _target_ is not allowed; configs build only registered classes"
    assert untouched(files)


def test_registered_classes_still_build():
    ratio = build({"_target_": "rasfw.strategies.ratios.ConstantRatio", "value": 0.25, "warmup": 2}, "ratio", "ratio")
    assert ratio.value == 0.25 and ratio.warmup == 2
    with pytest.raises(ValueError, match=r"ratio._target_: 'rasfw.strategies.metrics.StdNoise' is not a registered ratio"):
        build({"_target_": "rasfw.strategies.metrics.StdNoise"}, "ratio", "ratio")  # registered, but another kind
    with pytest.raises(ValueError, match="ratio.valu: unknown setting of ConstantRatio; it takes: value, warmup"):
        build({"_target_": "rasfw.strategies.ratios.ConstantRatio", "valu": 0.3}, "ratio", "ratio")


def test_hydra_callbacks_in_a_shared_yaml_are_refused(files, capsys):
    shared = files["dir"] / "shared" / "experiment"
    shared.mkdir(parents=True)
    (shared / "callback.yaml").write_text(
        "# @package _global_\nhydra:\n  callbacks:\n    evil:\n      _target_: pathlib.Path.touch\n"
        f"      self: {files['dir'] / 'system_ran'}\n"
    )
    with pytest.raises(SystemExit) as info:
        main([f"hydra.searchpath=[file://{files['dir'] / 'shared'}]", "+experiment=callback", *QUIET])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: hydra.callbacks.evil._target_: 'pathlib.Path.touch' is not a registered callback class; registered: "
        "rasfw.app.callbacks.ResultsCallback (Hydra callbacks run code: only registered callback classes are allowed)"
    )
    assert untouched(files)


def test_the_registered_results_callback_is_allowed_and_runs(tmp_path):
    """The one callback rasfw registers passes the gate, and Hydra runs it at the end of a multirun."""
    sweep = tmp_path / "sweep"
    main(["-m", "sampler.kv_cache=true,false", "eval.prompts=2", "steps=3", "ratio.warmup=1", "reset=none",
          "timing.repeats=0", f"hydra.sweep.dir={sweep}", *QUIET[:3]])  # fmt: skip
    assert (sweep / "results.csv").read_text().splitlines()[0].startswith("job,sampler.kv_cache,method")
    assert (sweep / "pareto_flops.png").is_file() and (sweep / "ablation.png").is_file()

"""Every bad input is one line naming the setting, exit code 2, no traceback and no summary.json.

A table across every group and key of `conf/config.yaml`, run in-process (`rasfw.app.cli.main`). Each case is
the overrides and a fragment the error line must contain (the setting's name, and often what is allowed).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from rasfw.app.cli import main

CLASSIFIER = Path(__file__).resolve().parents[2] / "rasfw" / "embedded" / "eval" / "weights" / "attribute_cnn.safetensors"
QUIET = ["hydra/job_logging=none", "hydra/hydra_logging=none", "progress=false", "compare_dense=false"]

CASES = [
    # ratio: constant
    ("ratio.value=0", "ratio.value must be in (0, 1]"),
    ("ratio.value=-1", "ratio.value must be in (0, 1]"),
    ("ratio.value=1.5", "ratio.value must be in (0, 1]"),
    ("ratio.value=abc", "ratio.value must be a number"),
    ("ratio.value=nan", "ratio.value must be a number"),
    ("ratio.value=inf", "ratio.value must be a number"),
    ("ratio.value=[0.5]", "ratio.value must be a number"),
    ("ratio.value=null", "ratio.value must be a number"),
    ("ratio.value=true", "ratio.value must be a number"),
    ("ratio.warmup=-1", "ratio.warmup must be in [0, inf)"),
    ("ratio.warmup=1.5", "ratio.warmup must be an integer"),
    ("ratio.warmup=abc", "ratio.warmup must be an integer"),
    ("ratio.warmup=true", "ratio.warmup must be an integer"),
    ("ratio.valu=0.3", "ratio.valu: unknown setting; ratio has: value, warmup"),
    ("ratio.vlaue=0.5", "ratio.vlaue: unknown setting; ratio has: value, warmup"),
    ("+ratio.vlaue=0.5", "ratio.vlaue: unknown setting of ConstantRatio; it takes: value, warmup"),
    ("ratio.start=0.3", "ratio.start: unknown setting; ratio has: warmup, value; ratio=linear takes it (choose it first)"),
    ("kv_cache=false", "kv_cache: unknown setting; did you mean sampler.kv_cache?"),
    ("sampler.kv_cache=false sampler.kv_dtype=float8_e4m3fn", "sampler.kv_dtype=float8_e4m3fn stores cached keys/values, and sampler.kv_cache=false caches none"),
    ("fill.order=2", "fill.order: not a setting of the chosen fill, which takes none; fill=taylor takes it (choose it first)"),
    ("+ratio.extra=1", "ratio.extra: unknown setting of ConstantRatio; it takes: value, warmup"),
    ("ratio=nope", "ratio: unknown option 'nope'"),
    # ratio: linear, reference_dynamic
    ("ratio=linear ratio.start=0", "ratio.start must be in (0, 1]"),
    ("ratio=linear ratio.end=2", "ratio.end must be in (0, 1]"),
    ("ratio=linear ratio.warmup=-3", "ratio.warmup must be in [0, inf)"),
    ("ratio=reference_dynamic ratio.value=0", "ratio.value must be in (0, 1]"),
    ("ratio=reference_dynamic ratio.block=0", "ratio.block"),
    ("ratio=reference_dynamic ratio.multiple=0", "ratio.multiple"),
    ("ratio=reference_dynamic ratio.delta=abc", "ratio.delta"),
    # metric
    ("metric=nope", "metric: unknown option 'nope'"),
    ("metric._target_=os.system", "metric._target_: 'os.system' is not a registered metric class"),
    ("+metric.foo=1", "metric.foo: unknown setting of "),
    # starvation
    ("starvation.k=-1", "starvation.k must be in [0, 100]"),
    ("starvation.k=101", "starvation.k must be in [0, 100]"),
    ("starvation.k=1e308", "starvation.k must be in [0, 100]"),
    ("starvation.k=abc", "starvation.k must be a number"),
    ("starvation.k=nan", "starvation.k must be a number"),
    ("starvation.k=true", "starvation.k must be a number"),
    ("starvation=nope", "starvation: unknown option 'nope'"),
    # reset
    ("reset.steps=[40]", "reset.steps (FixedReset(steps=...)) must lie in [0, 28)"),
    ("reset.steps=[-1]", "reset.steps must be in [0, steps)"),
    ("reset.steps=[a]", "reset.steps must be an integer"),
    ("reset.steps=[4,4]", "reset.steps lists step 4 twice"),
    ("reset.steps=[1.5]", "reset.steps must be an integer"),
    ("reset=periodic reset.every=0", "reset.every"),
    ("reset=periodic reset.start=-1", "reset.start"),
    ("reset=periodic reset.every=abc", "reset.every"),
    ("reset=nope", "reset: unknown option 'nope'"),
    # fill
    ("fill=nope", "fill: unknown option 'nope'; available: reuse, taylor"),
    ("fill=taylor fill.order=3", "fill.order must be in [1, 2]; got 3"),
    ("fill=taylor fill.order=abc", "fill.order must be an integer"),
    ("+fill.order=1", "fill.order: unknown setting of ReuseFill"),
    ("fill=taylor fill.order=2 ratio.warmup=2", "fill.order=2 (TaylorFill(order=...)) needs 3 dense steps before the first RAS step"),
    ("fill=taylor cache=first_block", "fill=taylor forecasts from the outputs the model computed"),
    # sampler
    ("sampler.high_ratio=-0.1", "sampler.high_ratio must be in [0, 1]"),
    ("sampler.high_ratio=1.1", "sampler.high_ratio must be in [0, 1]"),
    ("sampler.high_ratio=abc", "sampler.high_ratio must be a number"),
    ("sampler.kv_cache=maybe", "sampler.kv_cache must be true or false"),
    ("sampler.kv_cache=1", "sampler.kv_cache must be true or false"),
    ("sampler.kv_dtype=int8", "sampler.kv_dtype must be one of model, bfloat16, float16, float8_e4m3fn"),
    ("sampler.kv_dtype=float64", "sampler.kv_dtype must be one of"),
    ("sampler=nope", "sampler: unknown option 'nope'"),
    ("sampler._target_=builtins.exec", "sampler._target_: 'builtins.exec' is not a registered sampler class"),
    # backend and execution
    ("backend=nope", "backend: unknown option 'nope'"),
    ("backend._target_=os.system", "backend._target_: 'os.system' is not a registered backend class"),
    ("+backend.device=cuda", "backend.device: unknown setting; a backend option has only a _target_"),
    ("execution=nope", "execution: unknown option 'nope'"),
    ("execution=compile execution.compile_backend=nope", "execution.compile_backend: unknown torch.compile backend 'nope'"),
    ("execution=compile execution.recompile_limit=0", "execution.recompile_limit must be an integer >= 1"),
    ("execution=cudagraph", "execution=cudagraph needs a CUDA device"),
    ("execution=cudagraph execution.warmup=0", "execution.warmup must be an integer >= 1"),
    ("execution=cudagraph execution.compile=maybe", "execution.compile must be true or false"),
    ("+execution.name=warp", "execution.name: unknown setting of EagerExecution; it takes: "),
    ("execution._target_=os.system", "execution._target_: 'os.system' is not a registered execution class"),
    # plain settings
    ("steps=0", "steps must be in [1, inf)"),
    ("steps=-5", "steps must be in [1, inf)"),
    ("steps=abc", "steps must be an integer"),
    ("steps=1.5", "steps must be an integer"),
    ("steps=true", "steps must be an integer"),
    ("guidance=-1", "guidance must be in [0, inf)"),
    ("guidance=abc", "guidance must be a number"),
    ("guidance=nan", "guidance must be a number"),
    ("height=33", "height must be a multiple of 2"),
    ("height=96", "height must be at most 64 for this model"),
    ("height=1000000", "height must be at most 64 for this model"),
    ("height=-32", "height must be in [1, inf)"),
    ("height=0", "height must be in [1, inf)"),
    ("height=abc", "height must be an integer"),
    ("width=33", "width must be a multiple of 2"),
    ("width=1000000", "width must be at most 64 for this model"),
    ("seed=abc", "seed must be an integer"),
    ("seed=1.5", "seed must be an integer"),
    ("seed=1180591620717411303424", "seed must be in ["),
    ("prompts=[]", "prompts must be a non-empty list of strings"),
    ("prompts=[1,2]", "prompts must be a non-empty list of strings"),
    ("prompts=abc", "prompts must be a non-empty list of strings"),
    ("compare_dense=maybe", "compare_dense must be true or false"),
    ("compare_dense=3", "compare_dense must be true or false"),
    ("progress=maybe", "progress must be true or false"),
    ("+foo=1", "foo: unknown setting"),
    ("foo=1", "foo: unknown setting"),
    # model
    ("model=nope", "model: unknown option 'nope'"),
    ("model.weights=TEXT_FILE", "model.weights: TEXT_FILE is not a safetensors file"),
    ("model.weights=FOREIGN_FILE", "model.weights: FOREIGN_FILE is not an embedded-model file"),
    ("model.weights=/no/such/file.safetensors", "model.weights: no such file: /no/such/file.safetensors"),
    ("model.dtype=int8", "model.dtype must be one of float32, float16, bfloat16; got 'int8'"),
    ("model=sd3_tiny model.dtype=int8", "model.dtype must be one of float32, float16, bfloat16; got 'int8'"),
    ("model=sd3 model.path=/no/such/folder model.device=cpu", "model.path: cannot load '/no/such/folder'"),
    ("model.weights=CLASSIFIER", "model.weights: CLASSIFIER is an evaluator's classifier"),
    ("model.device=gpu0", "model.device: 'gpu0' is not a device; use cpu, cuda, cuda:<index> or mps"),
    ("model.device=cuda:99", "model.device=cuda:99: "),  # no CUDA here, or fewer than 100 devices
    ("model=sd3_tiny model.device=gpu0", "model.device: 'gpu0' is not a device"),
    ("model._target_=shutil.rmtree", "model._target_: 'shutil.rmtree' is not a registered runner class"),
    ("+model.foo=1", "model.foo: unknown setting of "),
    ("model=flux_tiny height=1000000 width=1000000", "tokens; at most 65536"),
    ("model=lumina_next_tiny height=100000", "tokens; at most 65536"),
    ("guidance=1e308", "the generated images contain NaN or infinite values"),
    ("execution=compile execution.mode=bogus", "execution.mode must be null or one of default"),
    ("execution=compile execution.compile_backend=aot_eager execution.mode=default", "execution.mode applies to the inductor"),
    # hydra
    ("hydra.run.dir=/proc/x", "hydra.run.dir: cannot write to '/proc/x'"),
    ("+hydra.callbacks.x._target_=os.system", "hydra.callbacks.x._target_: 'os.system' is not a registered callback class"),
    ("+hydra.callbacks.x.foo=1", "hydra.callbacks.x._target_: None is not a registered callback class"),
    ("+hydra.callbacks.results.inner={_target_:os.system}", "hydra.callbacks.results.inner: a nested _target_ is not allowed"),
    # sampler.count, cache, eval, timing, match_flops
    ("sampler.count=floor", "sampler.count must be one of exact, reference; got 'floor'"),
    ("cache=nope", "cache: unknown option 'nope'; available: first_block, none, taylorseer"),
    ("cache=first_block cache.threshold=-1", "cache.threshold must be in (0, inf)"),
    ("sampler=dense cache=first_block cache.threshold=0", "cache.threshold must be in (0, inf)"),
    ("sampler=dense cache=first_block cache.threshold=abc", "cache.threshold must be a number"),
    ("sampler=dense cache=taylorseer cache.cache_interval=0", "cache.cache_interval must be in [1, inf)"),
    ("sampler=dense cache=taylorseer cache.max_order=1.5", "cache.max_order must be an integer"),
    ("sampler=dense cache=taylorseer cache.use_lite_mode=maybe", "cache.use_lite_mode must be true or false"),
    ("sampler=dense cache=taylorseer cache.disable_cache_after_step=-1", "cache.disable_cache_after_step must be in"),
    ("eval.prompts=0", "eval.prompts must be in [1, 100000] or null"),
    ("eval.prompts=abc", "eval.prompts must be an integer"),
    ("eval.batch=0", "eval.batch must be in [1, inf)"),
    ("eval.prompt_seed=-1", "eval.prompt_seed must be in [0, 2**63)"),
    ("+eval.size=3", "eval.size: unknown setting; the eval settings are prompts, prompt_seed, batch, baseline_store"),
    ("eval.baseline_store=3", "eval.baseline_store must be a folder path or null"),
    ("eval.baseline_cache=3", "eval.baseline_cache: unknown setting; eval has: baseline_steps, baseline_store"),
    ("eval.baseline_steps=0", "eval.baseline_steps must be in [1, inf) or null"),
    ("eval.baseline_steps=abc", "eval.baseline_steps must be an integer"),
    ("timing.repeats=-1", "timing.repeats must be in [0, 1000]"),
    ("timing.repeats=1.5", "timing.repeats must be an integer"),
    ("timing.warmup=abc", "timing.warmup must be an integer"),
    ("+timing.median=true", "timing.median: unknown setting"),
    ("match_flops=maybe", "match_flops must be true or false"),
]


@pytest.mark.parametrize(("override", "fragment"), CASES, ids=[case[0] for case in CASES])
def test_bad_input(override, fragment, tmp_path, capsys):
    out = tmp_path / "out"
    text, foreign = tmp_path / "text.safetensors", tmp_path / "foreign.safetensors"
    text.write_text("not weights")
    save_file({"foo": torch.zeros(3)}, str(foreign))
    files = {"TEXT_FILE": text, "FOREIGN_FILE": foreign, "CLASSIFIER": CLASSIFIER}
    for token, path in files.items():
        override, fragment = override.replace(token, str(path)), fragment.replace(token, str(path))
    with pytest.raises(SystemExit) as info:
        main([*QUIET, *override.split(), *([] if "hydra.run.dir" in override else [f"hydra.run.dir={out}"])])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert info.value.code == 2, err
    assert err.startswith("error: ") and fragment in err, err
    assert "\n" not in err and "Traceback" not in captured.out + captured.err
    assert not (out / "summary.json").exists()


@pytest.mark.parametrize(
    ("raised", "code", "message"),
    [
        (KeyboardInterrupt(), 130, "error: interrupted"),
        (RuntimeError("disk on fire\nsecond line"), 1, "error: RuntimeError: disk on fire (RASFW_DEBUG=1 shows the traceback; "),
    ],
)
def test_an_interrupted_or_failing_run_is_one_line(raised, code, message, tmp_path, capsys, monkeypatch):
    def run(cfg, output_dir):
        (tmp_path / "grid.png").write_bytes(b"whole")  # what finished before it stopped
        raise raised

    monkeypatch.setattr("rasfw.app.cli.run", run)
    with pytest.raises(SystemExit) as info:
        main([*QUIET, f"hydra.run.dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == code and err.startswith(message) and "\n" not in err
    assert f"{tmp_path} holds 1 finished file(s) (grid.png), no summary.json" in err
    assert not (tmp_path / "summary.json").exists()


NUMERIC = {  # setting: (is it valid?, the fragment its error names)
    "ratio.value": (lambda v: 0 < v <= 1, "ratio.value must be"),
    "starvation.k": (lambda v: 0 <= v <= 100, "starvation.k must be"),
    "sampler.high_ratio": (lambda v: 0 <= v <= 1, "sampler.high_ratio must be"),
    "guidance": (lambda v: v >= 0, "guidance must be"),
}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(setting=st.sampled_from(sorted(NUMERIC)), value=st.floats(allow_nan=True, allow_infinity=True, width=32))
def test_any_out_of_range_number_is_refused_by_name(setting, value, tmp_path, capsys):
    valid, fragment = NUMERIC[setting]
    assume(not valid(value) or value != value)  # out of range, or NaN
    with pytest.raises(SystemExit) as info:
        main([*QUIET, f"{setting}={value}", f"hydra.run.dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and err.startswith(f"error: {fragment}") and "\n" not in err, err


EVIL_LOGGING = {
    "factory": "version: 1\nhandlers:\n  f:\n    (): builtins.open\n    file: VICTIM\n    mode: w\nroot:\n  handlers: [f]\n",
    "file_elsewhere": "version: 1\nhandlers:\n  f:\n    class: logging.FileHandler\n    filename: VICTIM\n    mode: w\n"
                      "root:\n  handlers: [f]\n",
    "socket": "version: 1\nhandlers:\n  s:\n    class: logging.handlers.SocketHandler\n    host: localhost\n    port: 9\n",
    "ext_object": "version: 1\nhandlers:\n  c:\n    class: logging.StreamHandler\n    stream: ext://os.system\n",
    "formatter_class": "version: 1\nformatters:\n  x:\n    class: logging.handlers.MemoryHandler\n",
}


@pytest.mark.parametrize(
    ("option", "fragment"),
    [
        ("factory", "hydra.job_logging.handlers.f.(): logging factories run code"),
        ("file_elsewhere", "hydra.job_logging.handlers.f.filename: log files must lie inside the run folder"),
        ("socket", "hydra.job_logging.handlers.s.class: 'logging.handlers.SocketHandler' is not allowed"),
        ("ext_object", "hydra.job_logging.handlers.c.stream: 'ext://os.system' is not allowed"),
        ("formatter_class", "hydra.job_logging.formatters.x: only logging.Formatter formatters are allowed"),
    ],
)
def test_a_shared_logging_config_cannot_run_code_or_write_outside_the_run_folder(option, fragment, tmp_path, capsys):
    """A logging option from a shared config folder (`hydra.searchpath`) passes the same gate as every config:
    one line, exit 2, and the file it names is neither created nor truncated."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "shared" / "hydra" / "job_logging"
    folder.mkdir(parents=True)
    (folder / "evil.yaml").write_text(EVIL_LOGGING[option].replace("VICTIM", str(victim)))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main([f"hydra.searchpath=[file://{tmp_path / 'shared'}]", "hydra/job_logging=evil", "progress=false",
              "compare_dense=false", f"hydra.run.dir={out}"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and err.startswith("error: ") and fragment in err and "\n" not in err, err
    assert victim.read_text() == "precious" and not (out / "summary.json").exists()


@pytest.mark.parametrize(
    "override",
    [
        "hydra.job_logging.handlers.file.filename=/tmp/elsewhere.log",
        "hydra.job_logging.handlers.file.filename=${hydra.runtime.output_dir}/../escaped.log",
        "hydra.hydra_logging.handlers.console.class=logging.handlers.SysLogHandler",
    ],
)
def test_logging_overrides_pass_the_gate_in_the_main_command_and_the_bench(override, tmp_path, capsys):
    from rasfw.app.bench import main as bench

    for command in (main, bench):
        with pytest.raises(SystemExit) as info:
            command([override, f"hydra.run.dir={tmp_path / 'out'}"])
        err = capsys.readouterr().err.strip()
        assert info.value.code == 2 and err.startswith("error: hydra.") and "\n" not in err, err

"""The compatibility matrix of `docs/compatibility.md`, cell by cell: pipeline × feature → exact / refused / n/a.

* exact: with the feature in use, RAS at ratio 1 is bit for bit the plain pipeline with the same feature, RAS at
  0.25 is finite, differs and stays close to it (relative L2 below `CLOSE`), and after `remove_ras` the plain
  pipeline is back, bit for bit (in the style of diffusers' cache tester mixins);
* refused: `apply_ras` (or the first call, before any step) raises one line that says what to do;
* n/a: the plain pipeline cannot run the feature (the test checks that it fails without RAS).

The table in the docs is checked against `EXPECTED` here, so the two cannot drift apart.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from rasfw import apply_ras, remove_ras
from rasfw.pipelines.tiny import _seeded
from tests.compat_cases import CASES, HEIGHT, STEPS, WIDTH, Request, call, exact, quarter
from tests.helpers import relative

CLOSE = 0.5
FEATURES = [
    "ras", "lora_after_apply", "model_cpu_offload", "group_offload", "attention_backend", "heun", "unipc", "dpm++", "first_block_cache",
    "taylorseer_cache", "layerwise_casting", "set_attn_processor", "from_pipe", "interrupt", "requests", "user_compile",
]  # fmt: skip

_FLUX_SOLVERS = {"heun": "n/a", "dpm++": "n/a"}  # Flux's pipelines pass sigmas / mu these schedulers refuse
_IMAGE_INPUT = {"unipc": "n/a", "dpm++": "n/a"}  # img2img and inpainting call scheduler.scale_noise
_NO_CONTEXT = {"first_block_cache": "n/a", "taylorseer_cache": "n/a"}  # diffusers' caches need cache_context calls
EXCEPTIONS = {
    "sd3_img2img": _IMAGE_INPUT,
    "sd3_inpaint": _IMAGE_INPUT,
    "flux": _FLUX_SOLVERS,
    "flux_img2img": {**_FLUX_SOLVERS, **_IMAGE_INPUT},
    "flux_img2img_true_cfg": {**_FLUX_SOLVERS, **_IMAGE_INPUT},
    "flux_inpaint": {**_FLUX_SOLVERS, **_IMAGE_INPUT},
    "flux_fill": {**_FLUX_SOLVERS, **_IMAGE_INPUT},
    "flux_controlnet": _FLUX_SOLVERS,
    "flux_true_cfg": _FLUX_SOLVERS,
    "lumina_next": {"lora_after_apply": "n/a", "set_attn_processor": "n/a"},  # LuminaNextDiT2DModel has neither
}


def _expected(name: str, feature: str) -> str:
    case = CASES[name]
    if feature in _NO_CONTEXT and not case.contexts:
        return "n/a"
    if feature == "from_pipe" and case.sibling is None:
        return "-"
    return EXCEPTIONS.get(name, {}).get(feature, "refused" if feature == "user_compile" else "exact")


EXPECTED = {name: {feature: _expected(name, feature) for feature in FEATURES} for name in CASES}
"""Per pipeline and feature: "exact", "refused", "n/a", or "-" (no test: the combination is not offered)."""


def check_exact(case, attach=None, prepare=None) -> None:
    """Ratio 1 exact, 0.25 close, removal exact; `prepare(pipe)` runs before `apply_ras`, `attach(pipe)` after it.

    The plain reference is a second pipeline built alike (the builders are seeded) with the same feature.
    """
    for sampler, ratio_one in ((exact(), True), (quarter(), False)):
        plain = _plain(case, prepare, attach)
        pipe = case.make()
        if prepare is not None:
            prepare(pipe)
        apply_ras(pipe, sampler)
        try:
            if attach is not None:
                attach(pipe)
            out = call(pipe, case.inputs())
        finally:
            remove_ras(pipe)
        if ratio_one:
            assert torch.equal(out, plain)
        else:
            assert torch.isfinite(out).all() and not torch.equal(out, plain)
            assert relative(out, plain) < CLOSE, relative(out, plain)
        assert torch.equal(call(pipe, case.inputs()), plain)


MATRIX_RELEASE = (0, 42)
"""The diffusers release the matrix describes (the one the project is tested with first)."""


def _plain(case, prepare, attach) -> torch.Tensor:
    """The reference: a pipeline built alike with the feature, without RAS. An older diffusers release (the
    oldest-versions run) that cannot run the feature even without RAS skips the cell, naming the release."""
    import diffusers

    try:
        reference = case.make()
        for step in (prepare, attach):
            if step is not None:
                step(reference)
        return call(reference, case.inputs())
    except Exception as exc:
        release = tuple(int(x) for x in diffusers.__version__.split(".")[:2])
        if release < MATRIX_RELEASE:
            pytest.skip(f"diffusers {diffusers.__version__} cannot run this feature even without RAS ({type(exc).__name__})")
        raise


def _scheduler(name: str):
    from diffusers import DPMSolverMultistepScheduler, FlowMatchHeunDiscreteScheduler, UniPCMultistepScheduler

    flow = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0}
    return {
        "heun": lambda pipe: FlowMatchHeunDiscreteScheduler.from_config(
            {k: v for k, v in pipe.scheduler.config.items() if k in ("num_train_timesteps", "shift")}
        ),
        "unipc": lambda pipe: UniPCMultistepScheduler(**flow),
        "dpm++": lambda pipe: DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", **flow),
    }[name]


def _step_cache(name: str):
    from diffusers.hooks import FirstBlockCacheConfig, TaylorSeerCacheConfig

    if name == "first_block_cache":
        return FirstBlockCacheConfig(threshold=0.2)
    return TaylorSeerCacheConfig(cache_interval=2, disable_cache_before_step=2, taylor_factors_dtype=torch.float32)


# -- the cells ------------------------------------------------------------------------------------------------


def feature_ras(case, pipe, run):
    check_exact(case)


def feature_lora_after_apply(case, pipe, run):
    pytest.importorskip("peft")
    from peft import LoraConfig

    def attach(p):
        with _seeded(11):
            p.transformer.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=case.lora, init_lora_weights=False))

    check_exact(case, attach)


def feature_model_cpu_offload(case, pipe, run):
    pytest.importorskip("accelerate")
    check_exact(case, lambda p: p.enable_model_cpu_offload(device="cpu"))


def feature_group_offload(case, pipe, run):
    cpu = torch.device("cpu")
    check_exact(case, lambda p: p.transformer.enable_group_offload(
        onload_device=cpu, offload_device=cpu, offload_type="block_level", num_blocks_per_group=1))  # fmt: skip


def feature_attention_backend(case, pipe, run):
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    active = _AttentionBackendRegistry._active_backend  # diffusers keeps the choice process-wide too
    try:
        check_exact(case, lambda p: p.transformer.set_attention_backend("_native_math"))
    finally:
        _AttentionBackendRegistry._active_backend = active  # set_active_backend is newer than diffusers 0.35


def feature_layerwise_casting(case, pipe, run):
    check_exact(case, lambda p: p.transformer.enable_layerwise_casting(torch.float8_e4m3fn, torch.float32))


def feature_set_attn_processor(case, pipe, run):
    """Processors set after `apply_ras` (of the kind the transformer had) are followed at the next call."""

    def attach(p):
        processors = p.transformer.attn_processors
        fresh = {name: type(getattr(proc, "original", proc))() for name, proc in processors.items()}
        p.transformer.set_attn_processor(fresh)

    check_exact(case, attach)


def feature_scheduler(name):
    def cell(case, pipe, run):
        check_exact(case, prepare=lambda p: setattr(p, "scheduler", _scheduler(name)(p)))

    return cell


def feature_step_cache(name):
    def cell(case, pipe, run):
        check_exact(case, lambda p: p.transformer.enable_cache(_step_cache(name)))

    return cell


def feature_from_pipe(case, pipe, run):
    sibling = case.sibling.from_pipe(pipe)
    assert sibling.transformer is pipe.transformer and sibling.scheduler is pipe.scheduler
    plain_sibling, plain = call(sibling, case.sibling_inputs()), run()
    apply_ras(pipe, quarter())
    try:
        ras = run()
        assert not torch.equal(ras, plain)
        assert torch.equal(call(sibling, case.sibling_inputs()), plain_sibling)
        assert torch.equal(run(), ras)
    finally:
        remove_ras(pipe)
    assert torch.equal(call(sibling, case.sibling_inputs()), plain_sibling)


def feature_interrupt(case, pipe, run):
    def stop_at_3(p, i, t, kwargs):
        p._interrupt = i == 3
        return {}

    state = apply_ras(pipe, quarter())
    try:
        ras = run()
        call(pipe, {**case.inputs(), "callback_on_step_end": stop_at_3})
        assert state.caches == {} and state.memory_bytes() == 0
        assert torch.equal(run(), ras)
    finally:
        remove_ras(pipe)


def feature_requests(case, pipe, run):
    """Consecutive requests with other step counts, batches and sizes each equal a freshly attached pipeline's."""
    requests = [Request(), Request(steps=STEPS + 3, batch=2), Request(height=WIDTH, width=HEIGHT), Request()]
    fresh = {}
    for r in set(requests):
        apply_ras(pipe, quarter())
        fresh[r] = call(pipe, case.inputs(r))
        remove_ras(pipe)
    assert fresh[requests[1]].shape[0] == 2
    apply_ras(pipe, quarter())
    try:
        for r in requests:
            assert torch.equal(call(pipe, case.inputs(r)), fresh[r]), r
    finally:
        remove_ras(pipe)


def feature_user_compile(case, pipe, run):
    pipe.transformer.compile()
    try:
        with pytest.raises(ValueError, match='already compiled.*execution="compile"'):
            apply_ras(pipe, quarter())
    finally:
        pipe.transformer._compiled_call_impl = None


CELLS = {
    "ras": feature_ras, "lora_after_apply": feature_lora_after_apply, "model_cpu_offload": feature_model_cpu_offload,
    "group_offload": feature_group_offload, "attention_backend": feature_attention_backend, "heun": feature_scheduler("heun"), "unipc": feature_scheduler("unipc"),
    "dpm++": feature_scheduler("dpm++"), "first_block_cache": feature_step_cache("first_block_cache"),
    "taylorseer_cache": feature_step_cache("taylorseer_cache"), "layerwise_casting": feature_layerwise_casting,
    "set_attn_processor": feature_set_attn_processor, "from_pipe": feature_from_pipe,
    "interrupt": feature_interrupt, "requests": feature_requests, "user_compile": feature_user_compile,
}  # fmt: skip


@pytest.mark.parametrize("feature", FEATURES)
@pytest.mark.parametrize("name", list(CASES))
def test_cell(name, feature):
    outcome = EXPECTED[name][feature]
    if outcome == "-":
        return
    case = CASES[name]
    pipe = case.make()

    def run():
        return call(pipe, case.inputs())

    if outcome == "n/a":
        with pytest.raises(Exception):  # noqa: B017 - whatever the plain pipeline raises
            if feature in ("heun", "unipc", "dpm++"):
                pipe.scheduler = _scheduler(feature)(pipe)
            elif feature == "lora_after_apply":
                from peft import LoraConfig

                pipe.transformer.add_adapter(LoraConfig(r=2, target_modules=case.lora))
            elif feature == "set_attn_processor":
                pipe.transformer.set_attn_processor(pipe.transformer.attn_processors)
            else:
                pipe.transformer.enable_cache(_step_cache(feature))
            run()
        return
    CELLS[feature](case, pipe, run)


def test_the_docs_show_this_matrix():
    """`docs/compatibility.md`'s table is `EXPECTED`, cell for cell."""
    text = (Path(__file__).parents[2] / "docs" / "compatibility.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    header = next(line for line in text.splitlines() if line.startswith("| pipeline |"))
    assert [c.strip().strip("`") for c in header.strip("|").split("|")[1:]] == FEATURES
    shown = {}
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(FEATURES) + 1:  # the table of what the columns mean
            continue
        shown[cells[0].strip("`")] = dict(zip(FEATURES, [re.sub(r"\W", "", c) or c for c in cells[1:]], strict=True))
    words = {"exact": "exact", "refused": "refused", "na": "n/a", "-": "-"}
    assert {k: {f: words[v] for f, v in row.items()} for k, row in shown.items()} == EXPECTED

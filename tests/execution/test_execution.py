"""Execution modes: `compile` equals `eager` with at most one graph per call shape; `cudagraph` needs CUDA.

Compiled runs are the slow part of the suite, so each family is compiled once (a module-scoped fixture)
and every assertion about it reads that one run. `fullgraph=True` makes any graph break an error, so a
passing compiled run proves the transformer call has no host synchronisation and no data-dependent branch.
"""

from __future__ import annotations

import pytest
import torch

from rasfw import DenseSampler, RegionAdaptiveSampler, apply_ras, ras_execution, remove_ras
from rasfw.execution import CompiledExecution, EagerExecution, build_executor
from rasfw.pipelines.loop import sd3_denoise
from rasfw.pipelines.tiny import tiny_flux_pipeline, tiny_lumina_next_pipeline, tiny_sd3_pipeline, tiny_sd3_transformer
from rasfw.strategies.ratios import ConstantRatio, LinearRatio
from rasfw.strategies.resets import FixedReset
from rasfw.testing.tiny import FluxCall, LuminaNextCall, SD3Call, TinySD3Pipeline, tiny_sd3_loop
from tests.helpers import ras

STEPS = 8  # dense steps 0 and 1 (warm-up 2; step 1 captures), RAS 2-4, reset 5 (captures), RAS 6-7
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}  # float32: compiled kernels fuse and reorder, nothing more
FAMILIES = {
    "sd3": lambda: SD3Call(tiny_sd3_pipeline(0)),
    "lumina_next": lambda: LuminaNextCall(tiny_lumina_next_pipeline()),
    "flux": lambda: FluxCall(tiny_flux_pipeline()),
}


def generate(pipe) -> torch.Tensor:
    return pipe(batch=2, height=16, width=24, steps=STEPS, guidance=3.0, seed=0)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def compiled_run(request):
    """One family: dense, RAS eager, RAS compiled (inductor) twice, then dense again after removal."""
    pipe = FAMILIES[request.param]()
    dense = generate(pipe)
    apply_ras(pipe, ras())
    eager = generate(pipe)
    remove_ras(pipe)
    apply_ras(pipe, ras(), execution="compile")
    executor = ras_execution(pipe)
    first = generate(pipe)
    graphs_first = executor.graphs
    second = generate(pipe)
    remove_ras(pipe)
    return {"dense": dense, "eager": eager, "first": first, "second": second, "graphs_first": graphs_first,
            "graphs_second": executor.graphs - graphs_first, "keys": set(executor.keys),
            "after_remove": generate(pipe)}  # fmt: skip


@pytest.mark.slow  # compiles each family's transformer: the suite's longest end-to-end runs
def test_compile_equals_eager(compiled_run):
    torch.testing.assert_close(compiled_run["first"], compiled_run["eager"], **TOLERANCE)
    assert torch.equal(compiled_run["second"], compiled_run["first"])  # same graphs, same numbers
    assert not torch.equal(compiled_run["first"], compiled_run["dense"])


@pytest.mark.slow
def test_compile_builds_one_graph_per_call_shape_and_none_later(compiled_run):
    kinds = {key[0][0] for key in compiled_run["keys"]}
    assert kinds == {"dense", "capture", "ras"}  # three call shapes in this schedule
    assert compiled_run["graphs_first"] == len(compiled_run["keys"]) == 3
    assert compiled_run["graphs_second"] == 0


@pytest.mark.slow
def test_remove_after_compile_restores_the_pipeline(compiled_run):
    assert torch.equal(compiled_run["after_remove"], compiled_run["dense"])


def test_each_active_count_is_one_graph():
    """A linear ratio ramp has a different active count at every RAS step: one graph each, no more."""
    pipe = SD3Call(tiny_sd3_pipeline(0))
    sampler = RegionAdaptiveSampler(ratio=LinearRatio(0.75, 0.25, warmup=2), reset=FixedReset([5]))
    state = apply_ras(pipe, sampler, execution="compile", compile_backend="aot_eager")
    generate(pipe)
    ras_counts = {a for a, skip in zip(state.active_tokens_per_step, state.skips, strict=True) if skip > 0}
    executor = ras_execution(pipe)
    assert len(ras_counts) > 1
    assert executor.graphs == len(executor.keys) == len(ras_counts) + 2  # + dense + capture


def test_cudagraph_on_a_cpu_is_a_usage_error():
    pipe = SD3Call(tiny_sd3_pipeline(0))
    with pytest.raises(ValueError, match="execution=cudagraph needs a CUDA device; the transformer is on cpu"):
        apply_ras(pipe, ras(), execution="cudagraph")
    assert not hasattr(pipe.transformer, "_diffusers_hook")  # nothing was attached


@pytest.mark.parametrize(
    ("execution", "options", "message"),
    [
        ("warp", {}, "execution: unknown execution 'warp'; available: compile, cudagraph, eager"),
        ("compile", {"compile_backend": "nope"}, "execution.compile_backend: unknown torch.compile backend 'nope'"),
        ("compile", {"fullgraph": False}, "execution=compile: .*fullgraph"),
        ("cudagraph", {"warmup": 0}, "execution.warmup must be an integer >= 1"),
    ],
)
def test_bad_execution_settings_are_one_line(execution, options, message):
    with pytest.raises(ValueError, match=message):
        build_executor(execution, **options).check(torch.device("cpu"))


def test_build_executor_passes_instances_through():
    executor = CompiledExecution(compile_backend="aot_eager")
    assert build_executor(executor) is executor
    assert isinstance(build_executor(None), EagerExecution)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cudagraph_equals_eager_on_cuda():
    pipe = CudaSD3Loop()
    apply_ras(pipe, ras())
    eager = pipe()
    remove_ras(pipe)
    state = apply_ras(pipe, ras(), execution="cudagraph")
    first = pipe()
    executor = ras_execution(pipe)
    graphs = executor.graphs
    second = pipe()
    torch.testing.assert_close(first, eager, **TOLERANCE)
    assert torch.equal(second, first)
    assert graphs == 3 and executor.graphs == graphs  # one graph per call shape; none rebuilt later
    assert state.caches  # captured graphs hold the buffers between generations
    remove_ras(pipe)
    assert not state.caches


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cudagraph_ratio_one_equals_dense_on_cuda():
    pipe = CudaSD3Loop()
    dense = pipe()
    apply_ras(pipe, DenseSampler(), execution="cudagraph")
    torch.testing.assert_close(pipe(), dense, **TOLERANCE)
    assert ras_execution(pipe).graphs == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cudagraph_with_a_forecasting_fill_equals_eager_on_cuda():
    """The forecast reads the history and the step clock from fixed buffers that captured graphs replay."""
    from rasfw.strategies.fills import TaylorFill

    pipe = CudaSD3Loop()
    sampler = RegionAdaptiveSampler(ratio=ConstantRatio(0.25, 3), reset=FixedReset([5]), fill=TaylorFill(2))
    apply_ras(pipe, sampler)
    eager = pipe()
    remove_ras(pipe)
    apply_ras(pipe, sampler, execution="cudagraph")
    first = pipe()
    graphs = ras_execution(pipe).graphs
    second = pipe()  # the kept history of the first generation is overwritten by the warm-up
    torch.testing.assert_close(first, eager, **TOLERANCE)
    assert torch.equal(second, first) and ras_execution(pipe).graphs == graphs
    remove_ras(pipe)


class CudaSD3Loop(TinySD3Pipeline):
    """The tiny SD3 loop of the adapter tests, on the GPU (inputs drawn on the CPU, then moved)."""

    def __init__(self) -> None:
        super().__init__(tiny_sd3_transformer(0).to("cuda"))

    @torch.no_grad()
    def __call__(self, batch=2, height=16, width=24, steps=STEPS, guidance=3.0, seed=0):
        gens = [torch.Generator().manual_seed(seed + i) for i in range(batch)]
        latents = torch.stack([torch.randn(4, height, width, generator=g) for g in gens]).cuda()
        context = torch.randn(2 * batch, 8, 32, generator=gens[0]).cuda()
        pooled = torch.randn(2 * batch, 16, generator=gens[0]).cuda()
        self.scheduler.set_timesteps(steps, device="cuda")
        return sd3_denoise(self.transformer, self.scheduler, latents, context, pooled, guidance).cpu()


def test_compile_with_a_float8_cache_equals_eager():
    """kv_dtype's shared scratch buffers are one tensor read by every layer: the graph must alias it right."""
    pipe = SD3Call(tiny_sd3_pipeline(0))
    apply_ras(pipe, ras(kv_dtype="float8_e4m3fn"))
    eager = generate(pipe)
    remove_ras(pipe)
    apply_ras(pipe, ras(kv_dtype="float8_e4m3fn"), execution="compile", compile_backend="aot_eager")
    torch.testing.assert_close(generate(pipe), eager, **TOLERANCE)


def _graphs_built() -> int:
    """Graphs dynamo has built in this process (a private counter of torch._dynamo; tests only)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def test_compile_builds_nothing_after_the_first_generation_nor_on_reattachment():
    """The CLI times RAS by attaching it once per timed run: no generation after the first may recompile."""
    pipe = tiny_sd3_loop(0)
    apply_ras(pipe, ras())
    eager = pipe(batch=2, steps=STEPS)
    remove_ras(pipe)
    before = _graphs_built()
    apply_ras(pipe, ras(), execution="compile", compile_backend="aot_eager")
    first = pipe(batch=2, steps=STEPS)
    executor = ras_execution(pipe)
    assert executor.graphs == _graphs_built() - before == len(executor.keys) == 3  # what dynamo really built
    with torch.compiler.set_stance("fail_on_recompile"):  # any recompile is an error
        outputs = [pipe(batch=2, steps=STEPS), pipe(batch=2, steps=STEPS)]
        remove_ras(pipe)
        apply_ras(pipe, ras(), execution="compile", compile_backend="aot_eager")  # a new executor: the same graphs
        outputs.append(pipe(batch=2, steps=STEPS))
    assert ras_execution(pipe).graphs == 0 and _graphs_built() - before == 3
    remove_ras(pipe)
    torch.testing.assert_close(first, eager, **TOLERANCE)
    assert all(torch.equal(output, first) for output in outputs)
    assert "forward" not in vars(pipe.transformer.pos_embed)  # removal still restores the modules exactly


def test_compile_counts_the_graphs_a_new_setting_adds():
    """A second attachment with another ratio builds (and counts) only its new RAS call shape."""
    pipe = tiny_sd3_loop(0)
    before = _graphs_built()
    apply_ras(pipe, ras(), execution="compile", compile_backend="aot_eager")
    pipe(batch=1, steps=STEPS)
    remove_ras(pipe)
    sampler = RegionAdaptiveSampler(ratio=ConstantRatio(0.5, 2), reset=FixedReset([5]))
    apply_ras(pipe, sampler, execution="compile", compile_backend="aot_eager")
    pipe(batch=1, steps=STEPS)
    assert ras_execution(pipe).graphs == 1 and _graphs_built() - before == 4
    remove_ras(pipe)


def test_compile_on_the_embedded_pipeline_builds_nothing_after_the_first_generation():
    """The embedded model, called as the CLI calls it: later generations and re-attachments reuse every graph."""
    from rasfw.embedded.models import load_pipeline

    pipe = load_pipeline()
    sampler = RegionAdaptiveSampler(ratio=ConstantRatio(0.25, 2), reset=FixedReset([4]))

    def generate() -> torch.Tensor:
        return pipe("a small red circle at the top left", num_inference_steps=6, output_type="pt", progress=False,
                    generator=torch.Generator().manual_seed(0)).images  # fmt: skip

    before = _graphs_built()
    apply_ras(pipe, sampler, execution="compile", compile_backend="aot_eager")
    first = generate()
    assert ras_execution(pipe).graphs == _graphs_built() - before == 3
    with torch.compiler.set_stance("fail_on_recompile"):
        outputs = [generate(), generate()]
        remove_ras(pipe)
        apply_ras(pipe, sampler, execution="compile", compile_backend="aot_eager")
        outputs.append(generate())
    assert ras_execution(pipe).graphs == 0 and _graphs_built() - before == 3
    remove_ras(pipe)
    assert all(torch.equal(output, first) for output in outputs)

"""The sweep plots of `rasfw.app.report`: named by the experiment, fitted axes, labels apart, intervals drawn."""

import itertools
import json

import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.text import Annotation, Text

from rasfw.app import report


def row(job: int, accuracy: float, flops: float, fd: float = 700.0, ci: float | None = 0.02) -> dict:
    """A report row of a RAS job swept over `ratio.value`, with intervals of half-width `ci` (none if None)."""
    intervals = {} if ci is None else {"alignment_accuracy": [accuracy - ci, accuracy + ci], "fd": [fd - 30, fd + 40],
                                       "dense_alignment_accuracy": [0.9, 0.95]}  # fmt: skip
    return {"job": str(job), "method": "RAS", "ratio.value": f"0.{job}", "flops_ratio": flops, "alignment_accuracy": accuracy,
            "dense_alignment_accuracy": 0.93, "fd": fd, "dense_fd": 690.0, "psnr_vs_dense": 30.0 + job / 10,
            "ci": intervals, "vs_dense": {}}  # fmt: skip


@pytest.fixture
def crowded():
    """Twelve jobs whose points nearly coincide, the way a sweep's RAS points cluster."""
    return [row(j, 0.90 + 0.001 * j, 0.60 + 0.001 * j) for j in range(12)]


def test_the_title_names_the_experiment(tmp_path):
    for job in range(2):
        (tmp_path / str(job)).mkdir()
        summary = {"sampler": "ras", "fd": 700.0 + job, "flops_ratio": 0.5, "overrides": ["+experiment=ablation_demo", f"seed={job}"]}
        (tmp_path / str(job) / "summary.json").write_text(json.dumps(summary))
    rows = report.collect(tmp_path)
    assert report.experiment_name(rows) == "ablation_demo"
    assert report.sweep_title(tmp_path, rows) == f"ablation_demo (sweep {tmp_path.name})"
    assert report.sweep_title(tmp_path.parent / "ablation_demo", rows) == "ablation_demo"
    report.write_report(tmp_path)
    assert "ablation_demo" in (tmp_path / "results.md").read_text().splitlines()[0]
    table = [{**r, **r["overrides"]} for r in rows]
    assert "ablation_demo" in report.pareto_figure(table, ["seed"], "flops_ratio", "x", report.sweep_title(tmp_path, rows))._suptitle.get_text()
    assert "ablation_demo" in report.ablation_figure(table, ["seed"], "ablation_demo")._suptitle.get_text()


def test_a_sweep_without_one_experiment_is_named_by_its_folder(tmp_path):
    rows = [{"overrides": {"experiment": "a"}}, {"overrides": {"experiment": "b"}}]
    assert report.experiment_name(rows) is None and report.sweep_title(tmp_path, rows) == tmp_path.name


def test_the_pareto_plot_draws_the_intervals_as_error_bars(crowded):
    fig = report.pareto_figure(crowded, ["ratio.value"], "flops_ratio", "FLOPs", "demo")
    accuracy = fig.axes[0]
    bars = [c for c in accuracy.containers if isinstance(c, ErrorbarContainer)]
    assert bars[0].has_yerr and len(bars[0].lines[2][0].get_segments()) == len(crowded)  # one bar per job
    low, high = bars[0].lines[2][0].get_segments()[0][:, 1]
    assert (low, high) == pytest.approx((0.88, 0.92))
    assert "95 % CI" in fig._suptitle.get_text()


def test_the_point_labels_do_not_overlap(crowded):
    fig = report.pareto_figure(crowded, ["ratio.value"], "flops_ratio", "FLOPs", "demo")
    renderer = fig.canvas.get_renderer()
    for ax, (metric, _) in zip(fig.axes, report.QUALITY, strict=True):
        labels = [t for t in ax.texts if isinstance(t, Annotation)]
        # only frontier points are labelled: all twelve where quality rises with cost, the cheapest where FD ties
        assert len(labels) == (1 if metric == "fd" else len(crowded))
        boxes = []
        for label in labels:
            label.update_positions(renderer)
            boxes.append(Text.get_window_extent(label, renderer))
        assert len({(round(b.x0), round(b.y0)) for b in boxes}) == len(boxes)
        assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
        frame = ax.get_window_extent(renderer)
        assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes)


def test_the_ablation_axes_fit_a_narrow_band_and_draw_the_intervals(crowded):
    fig = report.ablation_figure(crowded, ["ratio.value"], "demo")
    accuracy, fd = fig.axes[:2]
    assert accuracy.get_xlim()[0] > 0.8 and fd.get_xlim()[0] > 600  # not from 0: the values sit near 0.9 and 700
    bars = [c for c in accuracy.containers if isinstance(c, ErrorbarContainer)]
    assert bars and bars[0].has_xerr and not bars[0].has_yerr
    assert [t.get_text() for t in accuracy.get_yticklabels()][:2] == ["value=0.0", "value=0.1"]


def test_the_ablation_axes_start_at_zero_when_the_values_spread_from_near_it():
    rows = [row(1, 0.1, 0.3, ci=None), row(2, 0.9, 0.6, ci=None)]
    fig = report.ablation_figure(rows, ["ratio.value"], "demo")
    assert fig.axes[0].get_xlim()[0] == 0.0
    assert not any(isinstance(c, ErrorbarContainer) and c.has_xerr for c in fig.axes[0].containers)


@pytest.mark.parametrize(
    ("values", "expected"),
    [([0.90, 0.93], (0.9, 0.93)), ([0.1, 0.9], (0.0, 0.9)), ([0.62, 0.62], (0.62, 0.62)), ([-5.0, -1.0], (-5.0, 0.0))],
)
def test_limits_show_the_differences(values, expected):
    low, high = report._limits(values)
    assert low <= expected[0] and high >= expected[1] and low < high
    assert (low == 0.0) == (expected[0] == 0.0) and (high == 0.0) == (expected[1] == 0.0)
    assert high - low <= 1.2 * max(expected[1] - expected[0], 0.1 * abs(expected[1]))

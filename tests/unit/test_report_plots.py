"""The Pareto plots of `rasfw.app.report`: each method's frontier as a line, labels on frontier points only."""

import csv
import random

import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.text import Annotation

from rasfw.app import report


def rows(*points: tuple[str, float, float | None]) -> list[dict]:
    """Hand-made rows `(job, cost, quality)` under the columns `x` and `q`."""
    return [{"job": job, "x": cost, "q": quality} for job, cost, quality in points]


def jobs(front: list[dict]) -> list[str]:
    return [r["job"] for r in front]


HAND = rows(
    ("cheap", 0.2, 0.5),
    ("cheap_twin", 0.2, 0.5),  # the very same point: neither dominates the other
    ("same_cost_worse", 0.2, 0.45),
    ("costlier_worse", 0.3, 0.4),
    ("costlier_equal", 0.4, 0.5),  # no better than `cheap`, and costs more
    ("best", 0.5, 0.9),
    ("best_tie", 0.5, 0.9),
    ("no_quality", 0.1, None),
)


def test_the_frontier_when_higher_is_better_keeps_ties_and_drops_the_dominated():
    front = report.pareto_front(HAND, "x", "q", higher_is_better=True)
    assert jobs(front) == ["cheap", "cheap_twin", "best", "best_tie"]


def test_the_frontier_when_lower_is_better_turns_the_other_way():
    front = report.pareto_front(HAND, "x", "q", higher_is_better=False)
    # lowest is best now: the cheapest point with the lowest value, then the one lower still at a higher cost
    assert jobs(front) == ["same_cost_worse", "costlier_worse"]
    fd = rows(("a", 0.2, 800.0), ("b", 0.3, 900.0), ("c", 0.5, 600.0), ("d", 0.2, 850.0), ("e", 0.4, 800.0))
    assert jobs(report.pareto_front(fd, "x", "q", higher_is_better=False)) == ["a", "c"]
    assert jobs(report.pareto_front(fd, "x", "q", higher_is_better=True)) == ["d", "b"]


def test_a_frontier_of_one_or_none():
    assert jobs(report.pareto_front(rows(("only", 0.3, 1.0)), "x", "q", higher_is_better=True)) == ["only"]
    assert report.pareto_front(rows(("blank", 0.3, None)), "x", "q", higher_is_better=True) == []


def test_the_direction_of_each_plotted_metric_is_the_one_its_axis_names():
    for metric, label in report.QUALITY:
        assert report.higher_is_better(metric) == ("higher is better" in label), metric
    assert not report.higher_is_better("sfd") and not report.higher_is_better("dense_fd")
    assert report.higher_is_better("ssim_vs_dense")


def sweep_front(points: list[dict], x: str, metric: str) -> set[str]:
    """The frontier by a sweep (cheapest first, keep what beats the best so far), to check `pareto_front` against."""
    sign = -1.0 if "lower is better" in dict(report.QUALITY)[metric] else 1.0  # as the axis says, not the code
    kept, best = set(), None
    for r in sorted(points, key=lambda r: (r[x], -sign * r[metric])):
        if best is None or sign * r[metric] > sign * best[metric] or (r[x], r[metric]) == (best[x], best[metric]):
            kept.add(r["job"])
            best = r if best is None or sign * r[metric] > sign * best[metric] else best
    return kept


@pytest.fixture
def three_methods():
    """Twenty jobs of three methods, quality rising with cost plus noise, with intervals and a dense baseline."""
    rng = random.Random(7)
    table = []
    for job in range(20):
        method = ("RAS", "cache: first_block", "dense, fewer steps")[job % 3]
        cost = rng.uniform(0.1, 0.9)
        accuracy = 0.5 + 0.4 * cost + rng.uniform(-0.1, 0.1)
        fd = 900 - 300 * cost + rng.uniform(-80, 80)
        psnr = 20 + 10 * cost + rng.uniform(-3, 3)
        ci = {"alignment_accuracy": [accuracy - 0.03, accuracy + 0.03], "fd": [fd - 40, fd + 50], "psnr_vs_dense": [psnr - 1, psnr + 1],
              "dense_alignment_accuracy": [0.88, 0.96], "dense_fd": [560.0, 700.0]}  # fmt: skip
        table.append({"job": str(job), "method": method, "ratio.value": f"{cost:.3f}", "flops_ratio": cost,
                      "alignment_accuracy": accuracy, "fd": fd, "psnr_vs_dense": psnr, "dense_alignment_accuracy": 0.92,
                      "dense_fd": 620.0, "dense_psnr_vs_dense": None, "ci": ci, "vs_dense": {}})  # fmt: skip
    return table


def frontier_labels(table: list[dict], metric: str) -> set[str]:
    methods = {r["method"] for r in table}
    return {f"value={r['ratio.value']}" for m in methods
            for r in table if r["method"] == m and r["job"] in sweep_front([p for p in table if p["method"] == m], "flops_ratio", metric)}  # fmt: skip


def test_only_the_frontier_points_are_labelled(three_methods):
    fig = report.pareto_figure(three_methods, ["ratio.value"], "flops_ratio", "FLOPs", "demo")
    for ax, (metric, _) in zip(fig.axes, report.QUALITY, strict=True):
        labels = {t.get_text() for t in ax.texts if isinstance(t, Annotation)}
        expected = frontier_labels(three_methods, metric)
        assert len([t for t in ax.texts if isinstance(t, Annotation)]) == len(expected) < len(three_methods)
        assert labels == expected, metric


def test_each_method_has_one_frontier_line_per_panel_through_its_frontier(three_methods):
    fig = report.pareto_figure(three_methods, ["ratio.value"], "flops_ratio", "FLOPs", "demo")
    for ax, (metric, _) in zip(fig.axes, report.QUALITY, strict=True):
        lines = [line for line in ax.lines if line.get_gid() == "frontier"]
        assert len(lines) == 3
        for line in lines:
            xs = list(line.get_xdata())
            assert xs == sorted(xs) and len(xs) >= 1
            method = next(r["method"] for r in three_methods if r["flops_ratio"] == xs[0])
            mine = [r for r in three_methods if r["method"] == method]
            assert set(xs) == {r["flops_ratio"] for r in mine if r["job"] in sweep_front(mine, "flops_ratio", metric)}


def test_every_point_keeps_its_interval_and_the_dominated_ones_are_faint(three_methods):
    fig = report.pareto_figure(three_methods, ["ratio.value"], "flops_ratio", "FLOPs", "demo")
    accuracy = fig.axes[0]
    bars = [c for c in accuracy.containers if isinstance(c, ErrorbarContainer)]
    methods = [c for c in bars if c.get_label() != "dense (all steps)"]
    assert sum(len(c.lines[2][0].get_segments()) for c in methods) == len(three_methods)  # one bar per job
    faint = [c for c in methods if c.lines[0].get_alpha() is not None and c.lines[0].get_alpha() < 1]
    labelled = sum(1 for t in accuracy.texts if isinstance(t, Annotation))
    assert faint and sum(len(c.lines[2][0].get_segments()) for c in faint) == len(three_methods) - labelled
    dense = next(c for c in bars if c.get_label() == "dense (all steps)")
    assert dense.has_yerr and dense.lines[2][0].get_segments()[0][:, 1] == pytest.approx((0.88, 0.96))


def test_the_legend_names_the_methods_and_the_dense_baseline(three_methods):
    fig = report.pareto_figure(three_methods, ["ratio.value"], "flops_ratio", "FLOPs", "demo")
    assert all(ax.get_legend() is None for ax in fig.axes)  # one legend, under the panels
    names = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"RAS", "cache: first_block", "dense, fewer steps", "dense (all steps)"} <= set(names)
    assert len(names) == len(set(names))


def test_a_wide_spread_gets_a_log_axis():
    table = [{"job": str(j), "method": "RAS", "flops_ratio": 0.1 * (j + 1), "alignment_accuracy": 0.5 + 0.1 * j,
              "fd": 30000.0 / (j + 1) ** 2, "psnr_vs_dense": 20.0 + j} for j in range(5)]  # fmt: skip
    fig = report.pareto_figure(table, [], "flops_ratio", "FLOPs", "demo")
    assert [ax.get_yscale() for ax in fig.axes] == ["linear", "log", "linear"]


def test_the_csv_marks_the_frontier_and_keeps_its_columns(tmp_path, three_methods):
    report.plot_pareto(tmp_path, three_methods, ["ratio.value"], "demo")
    with (tmp_path / "pareto_flops.csv").open() as f:
        reader = csv.DictReader(f)
        written = list(reader)
    columns = reader.fieldnames
    assert columns[:10] == ["job", "method", "label", "flops_ratio", "alignment_accuracy", "fd", "psnr_vs_dense",
                            "dense_alignment_accuracy", "dense_fd", "dense_psnr_vs_dense"]  # fmt: skip
    assert columns[-3:] == ["frontier_alignment_accuracy", "frontier_fd", "frontier_psnr_vs_dense"]
    for metric, _ in report.QUALITY:
        marked = {r["job"] for r in written if r[f"frontier_{metric}"] == "True"}
        expected = {j for m in {r["method"] for r in three_methods}
                    for j in sweep_front([r for r in three_methods if r["method"] == m], "flops_ratio", metric)}  # fmt: skip
        assert marked == expected and {r[f"frontier_{metric}"] for r in written} == {"True", "False"}

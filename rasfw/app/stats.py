"""Statistical power: 95 % confidence intervals over prompts, and whether two rows can be told apart.

A job evaluated on a prompt set records what a bootstrap over its prompts needs: per-prompt values in
`summary.json` (`per_prompt`: each image's alignment, 0 or 1, its PSNR and SSIM against the dense image of the
same seed) and the evaluator's features in `eval_features.npz` beside it (the images', the dense baseline's
and the real reference images', one row per prompt). A metric is then a statistic of a set of prompt indices:
a mean of per-prompt values, or a Frechet distance between the rows of two feature sets (FD, sFD), so a
resample of the prompts recomputes it (`scipy.stats.bootstrap`, BCa, a fixed seed).

Two rows evaluated on the same prompts and seeds are compared by a paired bootstrap: the same resampled
prompts go into both rows' statistics and their difference is taken; they are distinguishable on a metric when
the 95 % interval of that difference excludes 0. Each job records its CIs (`ci`) and its comparison with the
dense baseline it was evaluated beside (`vs_dense`) in its summary; `compare(job_a, job_b)` compares any two.

`python -m rasfw.app.stats <job folder> <job folder>` prints the comparison of two jobs.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rasfw.checks import first_line

CONFIDENCE = 0.95
SEED = 0
METHOD = "BCa"
MEAN_RESAMPLES = 1000  # a mean costs microseconds per resample
DISTANCE_RESAMPLES = 200  # a Frechet distance costs about a millisecond (128 or 256 features)
FEATURES_FILE = "eval_features.npz"
SAME = "≈"  # the tables' mark of a metric not distinguishable from the dense baseline's

MEANS = ("alignment_accuracy", "dense_alignment_accuracy", "psnr_vs_dense", "ssim_vs_dense")
"""Metrics that are the mean of their per-prompt values (`per_prompt[metric]`)."""
DISTANCES = (("fd", "fd_reference"), ("dense_fd", "fd_reference"), ("sfd", "sfd_reference"),
             ("dense_sfd", "sfd_reference"))  # fmt: skip
"""Metrics that are a Frechet distance between two feature sets of `eval_features.npz`: (metric, reference)."""
METRICS = (*MEANS[:2], "fd", "dense_fd", "sfd", "dense_sfd", *MEANS[2:])
"""Every metric with a confidence interval, in the order of the summary's `ci`."""
VS_DENSE = (("alignment_accuracy", "dense_alignment_accuracy"), ("fd", "dense_fd"), ("sfd", "dense_sfd"))
"""(metric, the dense baseline's same metric): compared within a job (PSNR and SSIM are against dense already)."""


@dataclass(frozen=True)
class PromptSample:
    """One job's per-prompt evidence.

    Attributes:
        values: per-prompt values `(N,)` whose mean is a metric, by metric name.
        features: evaluator features `(N, D)` by name (`fd`, `dense_fd`, `fd_reference`, `sfd`, ...).
        identity: what must match for two jobs to be paired (prompt set, prompt count, per-prompt seeds).
        name: how messages name the job (its folder).
    """

    values: Mapping[str, np.ndarray] = field(default_factory=dict)
    features: Mapping[str, np.ndarray] = field(default_factory=dict)
    identity: tuple = ()
    name: str = "job"

    def metrics(self) -> list[str]:
        """The metrics this sample can resample, in `METRICS` order."""
        distances = {m for m, ref in DISTANCES if m in self.features and ref in self.features}
        return [m for m in METRICS if m in distances or (m in self.values and _usable(self.values[m]))]

    def size(self, metric: str) -> int:
        """How many prompts `metric` is computed over."""
        return len(self.values[metric]) if metric in self.values else len(self.features[metric])


@dataclass(frozen=True)
class Comparison:
    """A paired difference `a - b` of one metric over the same prompts, with its 95 % interval.

    Attributes:
        difference: the point estimate of `a - b`.
        ci: the interval `(low, high)` of the difference.
        distinguishable: whether the interval excludes 0.
    """

    difference: float
    ci: tuple[float, float]
    distinguishable: bool

    def as_json(self) -> dict[str, Any]:
        """The comparison as summary.json holds it."""
        return {"difference": self.difference, "ci": list(self.ci), "distinguishable": self.distinguishable}


def _usable(values: np.ndarray) -> bool:
    """A per-prompt list is resampled only if every value is finite (an identical pair has PSNR inf: null)."""
    return len(values) > 0 and bool(np.isfinite(values).all())


def sample_from(summary: Mapping[str, Any], features: Mapping[str, Any] | None = None, name: str = "job") -> PromptSample:
    """The per-prompt evidence of a job from its summary (`per_prompt`) and evaluator features.

    Args:
        summary: the job's summary (an old one without `per_prompt` gives an empty sample).
        features: `{name: (N, D) array or tensor}` (None: none; FD and sFD then have no interval).
        name: the job's name in messages.
    """
    per_prompt = summary.get("per_prompt") or {}
    values = {k: np.array([np.nan if v is None else v for v in vs], dtype=np.float64)
              for k, vs in per_prompt.items() if k in MEANS}  # fmt: skip
    arrays = {k: _array(v).astype(np.float64) for k, v in (features or {}).items()}  # each (N, D)
    identity = (summary.get("prompts"), summary.get("prompt_count"), tuple(per_prompt.get("seeds", ())))
    return PromptSample(values, arrays, identity, name)


def load(folder: str | Path) -> PromptSample:
    """The per-prompt evidence of the job in `folder` (its `summary.json` and, if there, `eval_features.npz`).

    Args:
        folder: a job folder.
    """
    folder = Path(folder)
    path = folder / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no summary.json (a job folder holds one)")
    features = folder / FEATURES_FILE
    arrays = None
    if features.is_file():
        try:
            with np.load(features) as data:
                arrays = {k: data[k] for k in data.files}
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: one line naming it
            raise ValueError(f"{features}: not a readable evaluator-features file ({type(exc).__name__}); rerun the job") from None
        bad = next((k for k, a in arrays.items() if a.ndim != 2 or not np.issubdtype(a.dtype, np.number)), None)
        if bad is not None:
            raise ValueError(f"{features}: {bad} is not an (images, features) array of numbers; rerun the job")
    return sample_from(read_summary(path), arrays, str(folder))


SUMMARY_KEYS = ("sampler",)
"""Keys every `summary.json` rasfw writes holds, old ones included (a summary written by something else lacks them,
and would otherwise be reported as RAS)."""


def read_summary(path: Path) -> dict[str, Any]:
    """A job's `summary.json` as a dict.

    Raises:
        ValueError: one line naming the file: not JSON (truncated), not an object, or not written by rasfw.
    """
    try:
        summary = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({first_line(exc)}); the job was cut short: rerun it") from None
    if not isinstance(summary, dict):
        raise ValueError(f"{path}: a summary is a JSON object; this holds a {type(summary).__name__}")
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    if missing:
        raise ValueError(f"{path}: not a rasfw job summary (no {', '.join(missing)})")
    return summary


def save_features(path: Path, features: Mapping[str, Any]) -> Path:
    """Write evaluator features `{name: (N, D) tensor or array}` as float32 to a compressed `.npz`.

    Args:
        path: the file to write.
        features: the features by name.
    """
    from rasfw.app.files import written

    arrays = {k: _array(v).astype(np.float32) for k, v in features.items()}
    with written(path) as tmp:
        np.savez_compressed(tmp, **arrays)
    return Path(path)


def _array(value: Any) -> np.ndarray:
    """A tensor (on any device) or array-like as a numpy array."""
    return np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The Frechet distance between Gaussians fitted to feature sets `a` and `b` `(n, D)`, as
    `rasfw.embedded.eval.frechet_distance` defines it, computed in the smaller of sample and feature space.

    With `A`, `B` the centred features, `tr((S_a S_b)^(1/2))` is the sum of the singular values of
    `A B^T / (n - 1)` (the nonzero eigenvalues of `S_a S_b` are those of `(A B^T)(B A^T) / (n - 1)^2`); when
    `n > D`, `A` and `B` are first replaced by the `R` factors of their QR decompositions (the same Gram
    matrices). A resample of 64 prompts costs about a tenth of the eigendecompositions of `(D, D)` matrices.
    The result agrees with `frechet_distance` to about 1e-5 relative, and is the nearer to the exact value
    when `n < D` (there the evaluator takes square roots of a rank-deficient covariance's rounding noise).

    Args:
        a: features, one row per prompt (float64).
        b: the reference features of the same prompts, row by row.
    """
    n, dim = a.shape
    mu_a, mu_b = a.mean(0), b.mean(0)  # (D,)
    centred_a, centred_b = a - mu_a, b - mu_b  # (n, D)
    if n > dim:
        centred_a, centred_b = np.linalg.qr(centred_a, mode="r"), np.linalg.qr(centred_b, mode="r")  # (D, D)
    cross = centred_a @ centred_b.T  # (k, k), k = min(n, D)
    nuclear = np.sqrt(np.clip(np.linalg.eigvalsh(cross @ cross.T), 0, None)).sum()
    spread = np.square(centred_a).sum() + np.square(centred_b).sum() - 2 * nuclear
    return max(float(np.square(mu_a - mu_b).sum() + spread / (n - 1)), 0.0)


Statistic = Callable[[np.ndarray], np.ndarray]
"""A metric as a function of prompt indices: `(..., n)` int indices to `(...)` values (vectorized)."""


def statistic(sample: PromptSample, metric: str) -> Statistic:
    """`metric` of `sample` as a function of resampled prompt indices.

    Args:
        sample: the job's evidence.
        metric: one of `sample.metrics()`.
    """
    if metric in sample.values:
        values = sample.values[metric]  # (N,)
        return lambda idx: values[idx].mean(-1)  # (..., n) -> (...)
    reference = dict(DISTANCES)[metric]
    feats, ref = sample.features[metric], sample.features[reference]  # (N, D) each

    def distance(idx: np.ndarray) -> np.ndarray:
        flat = idx.reshape(-1, idx.shape[-1])  # (R, n)
        return np.array([frechet(feats[i], ref[i]) for i in flat]).reshape(idx.shape[:-1])

    return distance


def interval(stat: Statistic, n: int, resamples: int, centred: bool = False) -> tuple[float, float]:
    """The 95 % bootstrap interval of `stat` over `n` prompts (`scipy.stats.bootstrap`, a fixed seed).

    BCa by default. `centred`: the percentile interval shifted so that the bootstrap distribution's median is
    the point estimate, for Frechet distances, which a resample's repeated prompts raise (a resample of 64
    prompts holds about 40 distinct ones) so that BCa's bias correction fails. A statistic that no resample
    moves (all prompts alike, or a difference of identical rows) has the point interval `(value, value)`.

    Args:
        stat: the statistic of prompt indices.
        n: the number of prompts (at least 2).
        resamples: the number of bootstrap resamples.
        centred: the median-centred percentile interval instead of BCa.
    """
    from scipy.stats import bootstrap

    if n < 2:
        raise ValueError(f"a bootstrap needs at least 2 prompts; got {n}")
    point = float(stat(np.arange(n)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns of a degenerate distribution; handled below
        result = bootstrap((np.arange(n),), lambda idx, axis=-1: stat(idx), n_resamples=resamples, vectorized=True,
                           confidence_level=CONFIDENCE, method="percentile" if centred else METHOD,
                           rng=np.random.default_rng(SEED))  # fmt: skip
    distribution = result.bootstrap_distribution  # (resamples,)
    if np.ptp(distribution) == 0:
        return point, point
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if centred:
        shift = float(np.median(distribution)) - point
        return low - shift, high - shift
    if not (np.isfinite(low) and np.isfinite(high)):  # BCa undefined (e.g. every resample on one side)
        tail = (1 - CONFIDENCE) / 2 * 100
        low, high = (float(q) for q in np.percentile(distribution, [tail, 100 - tail]))
    return low, high


def _is_distance(metric: str) -> bool:
    return metric not in MEANS


def _resamples(metric: str) -> int:
    return DISTANCE_RESAMPLES if _is_distance(metric) else MEAN_RESAMPLES


def intervals(sample: PromptSample) -> dict[str, list[float]]:
    """The 95 % interval of every metric `sample` can resample (`{metric: [low, high]}`).

    Args:
        sample: the job's evidence.
    """
    return {m: list(interval(statistic(sample, m), sample.size(m), _resamples(m), _is_distance(m)))
            for m in sample.metrics() if sample.size(m) >= 2}  # fmt: skip


def paired(a: PromptSample, metric_a: str, b: PromptSample, metric_b: str) -> Comparison:
    """The paired bootstrap of `a.metric_a - b.metric_b`: the same resampled prompts in both statistics.

    Args:
        a: the first job's evidence.
        metric_a: its metric.
        b: the second job's evidence (the same prompts and seeds; may be `a` itself).
        metric_b: its metric.
    """
    n = a.size(metric_a)
    if b.size(metric_b) != n:
        raise ValueError(f"{metric_a} of {a.name} has {n} prompts and {metric_b} of {b.name} {b.size(metric_b)}")
    stat_a, stat_b = statistic(a, metric_a), statistic(b, metric_b)
    distance = _is_distance(metric_a) or _is_distance(metric_b)
    low, high = interval(lambda idx: stat_a(idx) - stat_b(idx), n, DISTANCE_RESAMPLES if distance else MEAN_RESAMPLES,
                         distance)
    difference = float(stat_a(np.arange(n)) - stat_b(np.arange(n)))
    return Comparison(difference, (low, high), not low <= 0 <= high)


def vs_dense(sample: PromptSample) -> dict[str, Comparison]:
    """Each metric against the dense baseline's same metric in the same job (`VS_DENSE`), paired by prompt.

    Args:
        sample: the job's evidence (a job without a dense baseline gives `{}`).
    """
    available = set(sample.metrics())
    return {m: paired(sample, m, sample, d) for m, d in VS_DENSE if m in available and d in available and sample.size(m) >= 2}


def annotate(summary: Mapping[str, Any], features: Mapping[str, Any] | None) -> dict[str, Any]:
    """The summary fields of the bootstrap: `ci`, `vs_dense` and `bootstrap` (how they were computed).

    Args:
        summary: the job's summary with its `per_prompt` values.
        features: the job's evaluator features (as `eval_features.npz` holds them).
    """
    sample = sample_from(summary, features)
    return {
        "ci": intervals(sample),
        "vs_dense": {m: c.as_json() for m, c in vs_dense(sample).items()},
        "bootstrap": {"unit": "prompt", "method": METHOD, "confidence": CONFIDENCE, "seed": SEED,
                      "resamples": {"mean": MEAN_RESAMPLES, "distance": DISTANCE_RESAMPLES}},  # fmt: skip
    }


def compare(a: str | Path | PromptSample, b: str | Path | PromptSample) -> dict[str, Comparison]:
    """Whether two jobs evaluated on the same prompts and seeds can be told apart, per metric (`a - b`).

    Every metric both jobs can resample is compared by a paired bootstrap (for FD and sFD the resampled
    prompts are the same in both jobs and both distances are recomputed on them).

    Args:
        a: a job folder, or its `PromptSample`.
        b: the other job.

    Raises:
        ValueError: the jobs were not evaluated on the same prompts and seeds, or have no per-prompt data.
    """
    a, b = (x if isinstance(x, PromptSample) else load(x) for x in (a, b))
    for x in (a, b):
        if not x.metrics():
            raise ValueError(f"compare: {x.name} has no per-prompt data (a summary written before rasfw.app.stats, or a "
                             "job that was not evaluated)")  # fmt: skip
    if a.identity != b.identity:
        raise ValueError(f"compare: {a.name} and {b.name} were not evaluated on the same prompts and seeds")
    shared = [m for m in a.metrics() if m in b.metrics() and a.size(m) >= 2]
    if not shared:
        raise ValueError(f"compare: {a.name} and {b.name} share no metric over two prompts or more")
    return {m: paired(a, m, b, m) for m in shared}


def significant(value: float, digits: int = 3) -> str:
    """`value` to `digits` significant digits in fixed notation (`1276`, `31.8`, `0.938`), never as `1.28e+03`.

    Args:
        value: the number.
        digits: significant digits (more for a number with more digits before the point).
    """
    if value == 0 or not np.isfinite(value):
        return format(value, "g")
    magnitude = int(np.floor(np.log10(abs(value))))
    return f"{value:.{max(digits - 1 - magnitude, 0)}f}"


def with_ci(value: float | None, ci: Any, fmt: str | None = None, same: bool = False) -> str:
    """A table cell: `756 [701, 812]`, and ` ≈` (`SAME`) when `same`; the value alone without an interval.

    Args:
        value: the point estimate (None: "—").
        ci: its `[low, high]`, or None.
        fmt: the format of the three numbers (None: three significant digits, `significant`).
        same: mark the cell as not distinguishable from the dense baseline.
    """
    if value is None:
        return "—"

    def number(x: float) -> str:
        return significant(x) if fmt is None else format(x, fmt)

    text = number(value) if ci is None else f"{number(value)} [{number(ci[0])}, {number(ci[1])}]"
    return f"{text} {SAME}" if same else text


def not_distinguishable(vs: Mapping[str, Any] | None, metric: str) -> bool:
    """Whether a summary's `vs_dense` says `metric` is not distinguishable from the dense baseline's.

    Args:
        vs: the summary's `vs_dense` (None or missing metric: no comparison, so False).
        metric: the metric.
    """
    return bool(vs) and metric in vs and not vs[metric]["distinguishable"]


def legend() -> str:
    """The tables' line on what the brackets and the mark mean."""
    level = f"{CONFIDENCE * 100:.0f} %"
    return (f"[low, high]: {level} confidence interval, a bootstrap over the prompts (BCa; FD and sFD: "
            f"percentile, median-centred). {SAME}: not distinguishable from the dense baseline (the paired "
            f"{level} interval of method − dense over the same prompts and seeds contains 0); PSNR and SSIM "
            "are measured against dense.")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """`python -m rasfw.app.stats <job folder> <job folder>`: print whether the two jobs differ, per metric."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or any(a in ("-h", "--help") for a in args):
        print("usage: python -m rasfw.app.stats <job folder> <job folder>")
        return 0 if args and args[0] in ("-h", "--help") else 2
    try:
        result = compare(*args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args[0]} - {args[1]}, paired bootstrap over prompts ({CONFIDENCE:.0%} interval):")
    for metric, c in result.items():
        verdict = "distinguishable" if c.distinguishable else "not distinguishable"
        print(f"  {metric}: {c.difference:+.4g} [{c.ci[0]:.4g}, {c.ci[1]:.4g}] {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

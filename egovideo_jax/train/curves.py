"""`training_curves.png` from `metrics.jsonl`: every panel shows data.

Panels are grouped and ordered: loss and in-batch accuracies; learning rate; throughput and
step time; then each evaluator's metrics together (its overall metrics beside its fast-motion
ones), then anything else. A series logged at a few steps only (evaluations) is drawn with
markers and its values written next to them; a series that never changes (e.g.
`train/skipped_records` = 0) gets no panel but one line of text under the figure.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

SPARSE_POINTS = 12  # at most this many points: markers with their values
# (panel title, metric-name pattern): the panels in this order; a panel holds every
# non-constant series whose name matches (the first matching panel wins).
TRAIN_PANELS = (
    ('loss', r'train/loss'),
    ('in-batch accuracy', r'train/(v2t|t2v)_accuracy'),
    ('learning rate', r'train/lr'),
    ('throughput (clips/s)', r'train/clips_per_s'),
    ('step time (s)', r'train/step_time_s'),
    ('gradient norm', r'train/grad_norm'),
    ('MFU', r'train/mfu'),
)


def read_series(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """`{metric: [(step, value), ...]}` of every numeric field of a metrics.jsonl."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, encoding='utf-8') as file:
        for line in file:
            record = json.loads(line)
            for name, value in record.items():
                if name in ('step', 'time') or not isinstance(value, (int, float)):
                    continue
                series.setdefault(name, []).append((int(record['step']), float(value)))
    return series


def _is_constant(points: list[tuple[int, float]]) -> bool:
    values = {value for _, value in points}
    return len(points) > 1 and len(values) == 1


def _eval_group(name: str) -> tuple[str, str] | None:
    """('eval/demo', 'all/t2v_R@1') for 'eval/demo/all/t2v_R@1'."""
    match = re.fullmatch(r'(eval/[^/]+)/(.+)', name)
    return (match.group(1), match.group(2)) if match else None


def panels(series: dict[str, list[tuple[int, float]]]
           ) -> tuple[list[tuple[str, list[str]]], dict[str, float]]:
    """([(title, [metric names])] in drawing order, {constant metric: its value})."""
    constant = {name: points[0][1] for name, points in series.items() if _is_constant(points)}
    left = [name for name in series if name not in constant]
    ordered = []
    for title, pattern in TRAIN_PANELS:
        names = [name for name in left if re.fullmatch(pattern, name)]
        if names:
            ordered.append((title, names))
            left = [name for name in left if name not in names]
    # Each evaluator: one panel per metric family (R@1, R@5, mAP, pair accuracy, ...), its
    # subsets (all, fast_motion) together in it.
    groups: dict[tuple[str, str], list[str]] = {}
    for name in left:
        parsed = _eval_group(name)
        if parsed:
            evaluator, metric = parsed
            family = metric.rsplit('/', 1)[-1]
            groups.setdefault((evaluator, family), []).append(name)
    for (evaluator, family), names in groups.items():
        ordered.append((f'{evaluator}: {family}', sorted(names)))
        left = [name for name in left if name not in names]
    ordered += [(name, [name]) for name in left]
    return ordered, constant


def plot(series: dict[str, list[tuple[int, float]]], path: str | Path) -> Path:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    ordered, constant = panels(series)
    columns = min(4, max(1, len(ordered)))
    rows = max(1, math.ceil(len(ordered) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows + 0.6),
                                squeeze=False)
    for axis, (title, names) in zip(axes.flat, ordered):
        for name in names:
            steps, values = zip(*series[name])
            label = _eval_group(name)[1] if _eval_group(name) else name.removeprefix('train/')
            if len(steps) <= SPARSE_POINTS:
                axis.plot(steps, values, marker='o', label=label)
                for step, value in zip(steps, values):
                    axis.annotate(f'{value:.3g}', (step, value), textcoords='offset points',
                                  xytext=(0, 6), ha='center', fontsize=8)
            else:
                axis.plot(steps, values, label=label)
        axis.set_title(title, fontsize=11)
        axis.set_xlabel('step')
        axis.grid(alpha=0.3)
        if len(names) > 1:
            axis.legend(fontsize=8)
    for axis in list(axes.flat)[len(ordered):]:
        axis.axis('off')
    if constant:
        text = 'constant: ' + ', '.join(f'{name} = {value:g}'
                                        for name, value in sorted(constant.items()))
        figure.text(0.01, 0.005, text, fontsize=9, va='bottom')
    figure.tight_layout(rect=(0, 0.04 if constant else 0, 1, 1))
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_metrics_file(metrics_path: str | Path, path: str | Path) -> Path | None:
    """`training_curves.png` from a run's metrics.jsonl (all of its steps, across resumes)."""
    metrics_path = Path(metrics_path)
    if not metrics_path.exists():
        return None
    series = read_series(metrics_path)
    return plot(series, path) if series else None

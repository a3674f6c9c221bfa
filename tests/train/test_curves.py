"""`training_curves.png` from a metrics file: every panel shows data (a one-point series as a
marker with its value, a constant series summarised in a line of text, not a panel)."""
import json

import matplotlib
import numpy as np
from PIL import Image

from egovideo_jax.train import curves

matplotlib.use('Agg')


def write_metrics(path):
    with open(path, 'w') as file:
        for step in range(1, 41):
            record = {'step': step, 'time': 1e9 + step, 'train/loss': 3.0 / step,
                      'train/lr': min(step, 10) * 1e-4, 'train/skipped_records': 0,
                      'train/clips_per_s': 100 + step % 3}
            if step in (20, 40):
                record.update({'eval/demo/all/t2v_r1': 10.0 + step,
                               'eval/demo/fast_motion/t2v_r1': 5.0 + step,
                               'eval/demo/fast_motion/pair_accuracy': 50 + step / 4})
            if step == 40:
                record['eval/demo/all/t2v_map'] = 33.0  # logged once
            file.write(json.dumps(record) + '\n')


def test_every_panel_has_something_drawn(tmp_path, monkeypatch):
    metrics = tmp_path / 'metrics.jsonl'
    write_metrics(metrics)
    series = curves.read_series(metrics)
    ordered, constant = curves.panels(series)
    assert constant == {'train/skipped_records': 0.0}
    titles = [title for title, _ in ordered]
    assert titles[:3] == ['loss', 'learning rate', 'throughput (clips/s)']
    # The evaluator's metrics together: R@1 of both subsets in one panel.
    assert ('eval/demo: t2v_r1', ['eval/demo/all/t2v_r1', 'eval/demo/fast_motion/t2v_r1']) \
        in ordered
    drawn = {}
    import matplotlib.pyplot as plt
    savefig = plt.Figure.savefig

    def inspect_and_save(figure, *args, **kwargs):
        for axis in figure.axes:
            if axis.get_visible() and axis.axison:
                lines = [line for line in axis.get_lines() if len(line.get_xdata())]
                drawn[axis.get_title()] = (lines, [t.get_text() for t in axis.texts])
        drawn['figure text'] = [t.get_text() for t in figure.texts]
        return savefig(figure, *args, **kwargs)

    monkeypatch.setattr(plt.Figure, 'savefig', inspect_and_save)
    path = curves.plot_metrics_file(metrics, tmp_path / 'curves.png')
    assert set(titles) <= set(drawn)
    for title in titles:
        lines, _ = drawn[title]
        assert lines, f'panel {title!r} is empty'
    # A one-point series is a visible marker with its value written beside it.
    lines, texts = drawn['eval/demo: t2v_map']
    assert lines[0].get_marker() == 'o' and texts == ['33']
    # Sparse evaluations carry their values; the constant series is one line of text.
    assert drawn['eval/demo: pair_accuracy'][1] == ['55', '60']
    assert drawn['figure text'] == ['constant: train/skipped_records = 0']
    with Image.open(path) as image:
        pixels = np.asarray(image.convert('L'))
    assert image.size[0] >= 800 and pixels.std() > 10  # a real picture, not a blank page

"""The end-of-run report's pieces that the demo run (test_demo_e2e.py) cannot reach: metric
selection from metrics.jsonl, and the export skipped for parameters sharded over processes."""
import json

from egovideo_jax.model.config import get_model_config
from egovideo_jax.train import report
from tests.helpers.train_fixtures import get_config


def write_jsonl(workdir, records):
    with open(workdir / 'metrics.jsonl', 'w') as file:
        file.writelines(json.dumps(record) + '\n' for record in records)


def test_final_metrics_keep_the_last_value_of_each_reported_metric(tmp_path):
    write_jsonl(tmp_path, [
        {'step': 2, 'time': 1.0, 'train/loss': 3.0, 'train/lr': 0.1, 'train/v2t_accuracy': 0.1},
        {'step': 2, 'time': 2.0, 'eval/demo/all/v2t_r1': 10.0},
        {'step': 4, 'time': 3.0, 'train/loss': 2.0, 'train/lr': 0.2, 'train/v2t_accuracy': 0.3},
        {'step': 4, 'time': 4.0, 'eval/demo/all/v2t_r1': 20.0},
    ])
    assert report.final_metrics(tmp_path) == {
        'train/loss': {'step': 4, 'value': 2.0},
        'train/v2t_accuracy': {'step': 4, 'value': 0.3},
        'eval/demo/all/v2t_r1': {'step': 4, 'value': 20.0},
    }


def test_params_sharded_over_processes_get_the_converter_command_instead(tmp_path,
                                                                         monkeypatch):
    config = get_config('b16')
    config.data.train = str(tmp_path / 'records')
    config.report.hod_example = False
    write_jsonl(tmp_path, [{'step': 7, 'time': 1.0, 'train/loss': 1.5}])
    monkeypatch.setattr(report, 'host_readable', lambda params: False)
    readme = report.write_report(config, tmp_path, None, get_model_config('B/16', 'slowfast'),
                                 step=7, start_step=5, started=0.0)
    facts = json.loads((tmp_path / 'report' / 'report.json').read_text())
    assert facts['files']['export'] == {} and not (tmp_path / 'export').exists()
    command = (f'python -m egovideo_jax.convert to-torch --checkpoint '
               f'{tmp_path / "checkpoints" / "7"} --variant B/16 --mode slowfast '
               f'--num-frames 4 --out {tmp_path / "export" / "egovideo_b16.pt"}')
    assert command in facts['export_note']
    text = readme.read_text()
    assert command in text and 'resumed at step 5' in text
    assert '| `train/loss` | 7 | 1.5 |' in text
    # Complete for step 7: a rerun that trains nothing leaves it alone; one that trained
    # (e.g. from scratch after the checkpoints were deleted) writes it again.
    assert report.is_current(tmp_path, 7) and not report.is_current(tmp_path, 8)
    model_config = get_model_config('B/16', 'slowfast')
    assert report.write_report(config, tmp_path, None, model_config, step=7, start_step=7,
                               started=0.0) is None
    assert report.write_report(config, tmp_path, None, model_config, step=7, start_step=0,
                               started=0.0) == readme

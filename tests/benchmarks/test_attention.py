"""The attention benchmark runs (quick mode) and its implementations agree."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_attention_benchmark_quick(tmp_path):  # a few seconds
    out = tmp_path / 'attention.json'
    subprocess.run([sys.executable, os.path.join('benchmarks', 'attention.py'), '--quick',
                    '--out', str(out)], cwd=ROOT, check=True, timeout=300)
    report = json.loads(out.read_text())
    rows = {row['name']: row for row in report['results']}
    assert {'xla', 'chunked'} <= set(rows)
    for row in rows.values():
        assert row['forward_s'] > 0 and row['gradient_s'] > 0
        assert row['max_abs_diff_vs_xla'] <= 1e-5

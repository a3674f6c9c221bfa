"""The embedding benchmark runs (quick mode): every case, ours and the reference agree."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_embed_benchmark_quick(tmp_path):  # seconds: the tiny variant
    out = tmp_path / 'embed.json'
    subprocess.run([sys.executable, os.path.join('benchmarks', 'embed.py'), '--quick',
                    '--out', str(out)], cwd=ROOT, check=True, timeout=600)
    report = json.loads(out.read_text())
    assert (report['benchmark'], report['variant']) == ('embed', 'tiny')
    cases = {(row['case'], row['batch']): row for row in report['results']}
    assert set(cases) == {(case, batch) for case in ('slowfast', 'single_4f', 'single_16f')
                          for batch in (1, 2)}
    assert cases[('slowfast', 2)]['frames'] == [4, 16]
    assert cases[('single_16f', 1)]['frames'] == [16]
    for row in cases.values():
        assert row['ours_s'] > 0 and row['torch_s'] > 0 and len(row['ours_times_s']) == 2
        assert row['speedup_vs_torch'] == row['torch_s'] / row['ours_s']
        assert row['speedup_vs_torch_sdpa'] == row['torch_sdpa_s'] / row['ours_s']
        assert row['max_abs_diff'] <= 1e-5  # the same function

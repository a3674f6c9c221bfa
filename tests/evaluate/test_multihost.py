"""Evaluation embedding over two processes (each one CPU device, joined by
`jax.distributed` on 127.0.0.1): each process decodes only its share of every batch, and both
get every embedding back, equal to one process embedding everything."""
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

import egovideo_jax
from egovideo_jax.evaluate.embedding import embed_videos

REPO = Path(__file__).resolve().parents[2]
NUM_CLIPS, BATCH = 5, 4  # two batches, the second short

SCRIPT = textwrap.dedent(f'''
    import json, sys
    import jax
    import numpy as np
    port, process, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    jax.distributed.initialize(coordinator_address=f'127.0.0.1:{{port}}', num_processes=2,
                               process_id=process)
    import egovideo_jax
    from egovideo_jax.evaluate.embedding import embed_videos
    from egovideo_jax.parallel.sharding import make_mesh
    sys.path.insert(0, {str(REPO)!r})
    from tests.evaluate.test_multihost import clip
    model = egovideo_jax.load(variant='tiny', mode='single', verbose=False)
    mesh = make_mesh({{'data': -1, 'fsdp': 1, 'tensor': 1}})
    loaded = []
    def load(index):
        loaded.append(index)
        return clip(index)
    video = embed_videos(model, list(range({NUM_CLIPS})), load, {BATCH}, num_workers=0,
                         mesh=mesh)
    json.dump({{'video': video.tolist(), 'loaded': loaded}}, open(out, 'w'))
''')


def clip(index: int) -> list[np.ndarray]:
    gen = np.random.default_rng(index)
    return [gen.standard_normal((4, 32, 32, 3)).astype(np.float32)]


def test_two_processes_share_the_decoding_and_get_every_embedding(tmp_path):
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(REPO))
    env.pop('XLA_FLAGS', None)
    outs = [tmp_path / f'process{index}.json' for index in range(2)]
    processes = [subprocess.Popen([sys.executable, '-c', SCRIPT, str(port), str(index),
                                   str(outs[index])], cwd=REPO, env=env,
                                  stderr=subprocess.PIPE, text=True) for index in range(2)]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-4000:]
    results = [json.loads(out.read_text()) for out in outs]
    model = egovideo_jax.load(variant='tiny', mode='single', verbose=False)
    expected = embed_videos(model, list(range(NUM_CLIPS)), clip, BATCH, num_workers=0)
    for result in results:
        np.testing.assert_allclose(np.asarray(result['video']), expected, atol=1e-5)
    # Batch 0: rows 0-1 on process 0, 2-3 on process 1; batch 1 (clip 4 only): process 0
    # decodes clip 4 (its pad row is zeros), process 1 has only pad rows and decodes clip 4
    # once for their shapes.
    assert results[0]['loaded'] == [0, 1, 4] and results[1]['loaded'] == [2, 3, 4]

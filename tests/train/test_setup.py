"""The shared train setup (train/setup.py) and the scale fixes around the step: activation
sharding constraints that really reach the compiler, grad_norm over trainable parameters
only, device prefetch that checkpoints the consumed data position, and a preemption decision
that every process of a job takes at the same step."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from egovideo_jax.parallel import sharding
from egovideo_jax.parallel.batching import DevicePrefetcher
from egovideo_jax.train.loss import contrastive_loss
from egovideo_jax.train.optimizer import trainable_mask
from egovideo_jax.train.preemption import PreemptionWatcher, any_process
from egovideo_jax.train.setup import abstract_batch, make_setup
from tests.helpers.train_fixtures import get_config

REPO = Path(__file__).resolve().parents[2]


def tiny(stage: str = 'joint', batch: int = 4):
    config = get_config(f'demo,{stage}')
    config.model.variant = 'tiny'
    config.model.fast_frames = 4
    config.data.crop_size = 32
    config.data.batch_size = batch
    return config


def random_batch(config, model_config, seed=0):
    gen = np.random.default_rng(seed)
    size, batch = config.data.crop_size, config.data.batch_size
    inputs = {'slow': gen.standard_normal((batch, 4, size, size, 3), np.float32),
              'tokens': gen.integers(1, 1000, (batch, 77)).astype(np.int32)}
    if config.model.mode == 'slowfast':
        inputs['fast'] = gen.standard_normal((batch, model_config.fast_frames, size, size, 3),
                                             np.float32)
    return inputs


def child_env(devices: int) -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(REPO))
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
    return env


ACTIVATION_SCRIPT = textwrap.dedent('''
    import json, re
    from configs.cotrain import get_config
    from egovideo_jax.parallel import sharding
    from egovideo_jax.train.setup import abstract_batch, make_setup
    config = get_config('demo')
    config.model.variant = 'tiny'
    config.data.crop_size, config.data.batch_size = 32, 16
    config.mesh.data, config.mesh.fsdp = 2, 4
    mesh = sharding.make_mesh(config.mesh)
    setup = make_setup(config, mesh, 10)
    text = setup.step.lower(setup.abstract_state,
                            abstract_batch(config, setup.model_config, mesh)).as_text()
    found = re.findall(r'sdy.sharding_constraint %\\S+ <@mesh, (\\[.*?\\])> : tensor<(\\d+x\\d+)x\\d+x', text)
    print(json.dumps(found))
''')


def test_activation_constraints_reach_the_compiled_step():
    """Block-boundary activations are pinned to (batch over data x fsdp, length, embed): in
    all three towers (slow 17, fast 65 = 1 + 4 x 16 and text 77 tokens), forward and back."""
    done = subprocess.run([sys.executable, '-c', ACTIVATION_SCRIPT], cwd=REPO,
                          env=child_env(8), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found, 'no sharding constraint in the lowered step'
    assert {spec for spec, _ in found} == {'[{"data", "fsdp"}, {}, {}]'}, found
    shapes = {shape for _, shape in found}
    assert shapes == {'16x17', '16x65', '16x77'}, shapes
    # tiny: 2 blocks per tower + the pre-block constraint of each video branch.
    assert len(found) >= 2 * 3 + 2, found


def test_grad_norm_counts_only_trainable_parameters():
    config = tiny('stage2')
    mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
    setup = make_setup(config, mesh, total_steps=10)
    state = setup.create_state(seed=0)
    batch = random_batch(config, setup.model_config)
    params = state.params  # the step donates the state: keep a host copy of what is needed
    mask = trainable_mask(params, config.optim.trainable, config.optim.frozen)

    def loss(p):
        out = setup.module.apply({'params': p}, batch['slow'], batch['tokens'], batch['fast'])
        return contrastive_loss(out['video'], out['text'], out['logit_scale'], mesh)[0]

    grads = jax.jit(jax.grad(loss))(params)
    leaves, keep = jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(mask)
    trainable_norm = float(optax.global_norm([g for g, k in zip(leaves, keep) if k]))
    all_norm = float(optax.global_norm(grads))
    assert trainable_norm < 0.9 * all_norm  # stage2 freezes the backbone, which has gradients
    _, metrics = setup.step(state, batch)
    assert float(metrics['grad_norm']) == pytest.approx(trainable_norm, rel=1e-4)


def test_setup_shapes_match_the_config():
    config = tiny()
    mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
    setup = make_setup(config, mesh, total_steps=7)
    assert setup.total_steps == 7 and setup.model_config.variant == 'tiny'
    batch = abstract_batch(config, setup.model_config, mesh)
    assert batch['slow'].shape == (4, 4, 32, 32, 3) and batch['fast'].shape == (4, 4, 32, 32, 3)
    assert batch['tokens'].shape == (4, 77)
    assert jax.tree_util.tree_structure(setup.abstract_state) == jax.tree_util.tree_structure(
        setup.create_state(seed=0))


class CountingIterator:
    """A stand-in for the Grain iterator: yields 0, 1, ...; its state is the next index."""

    def __init__(self):
        self.position = 0

    def __next__(self):
        self.position += 1
        return self.position - 1

    def get_state(self):
        return {'position': self.position, 'stats': {}}

    def set_state(self, state):
        self.position = state['position']


def test_device_prefetcher_checkpoints_the_consumed_position():
    source = CountingIterator()
    prefetcher = DevicePrefetcher(source, to_device=lambda value: value * 10, size=2)
    assert [next(prefetcher) for _ in range(3)] == [0, 10, 20]
    assert source.position == 5  # `size` batches are on the device ahead of the step
    assert prefetcher.state()['position'] == 3
    saved = prefetcher.get_state()
    assert json.loads(saved)['position'] == 3
    assert [next(prefetcher) for _ in range(2)] == [30, 40]
    prefetcher.set_state(saved)  # what a restore does
    assert [next(prefetcher) for _ in range(3)] == [30, 40, 50]


def test_sigterm_is_noted_then_decided():
    with PreemptionWatcher() as watcher:
        assert not watcher.should_stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert watcher.requested and watcher.should_stop()
    assert signal.getsignal(signal.SIGTERM) is not watcher._note
    assert any_process(False) is False and any_process(True) is True  # one process


AGREE_SCRIPT = textwrap.dedent('''
    import json, sys
    import jax
    port, process = sys.argv[1], int(sys.argv[2])
    jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=2,
                               process_id=process)
    from egovideo_jax.train.preemption import any_process
    # Only process 1 is signalled, from step 3 on.
    print(json.dumps([any_process(process == 1 and step >= 3) for step in range(6)]))
''')


def test_two_processes_stop_at_the_same_step():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    processes = [subprocess.Popen([sys.executable, '-c', AGREE_SCRIPT, str(port), str(index)],
                                  cwd=REPO, env=child_env(1), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for index in range(2)]
    answers = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
        answers.append(json.loads(stdout.strip().splitlines()[-1]))
    assert answers == [[False, False, False, True, True, True]] * 2

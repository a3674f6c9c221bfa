"""Zero-shot evaluation configs.

    python -m egovideo_jax.evaluate --config=configs/eval.py:BENCHMARK --workdir=OUT \\
        --config.checkpoint=PATH --config.variant=B/16 --config.mode=slowfast \\
        --config.BENCHMARK.root=VIDEOS --config.BENCHMARK.<file field>=PATH

BENCHMARK: `ek100_mir`, `ek100_cls`, `egtea`, `egomcq`, or `all` (every one; set each one's
paths). Each benchmark section holds every field of its evaluator
(egovideo_jax/evaluate/registry.py `default_config`); the same sections go into a training
config's `config.evals` to evaluate during training.
"""
import ml_collections

from egovideo_jax.evaluate.registry import default_config

BENCHMARKS = ('ek100_mir', 'ek100_cls', 'egtea', 'egomcq')


def get_config(arg: str = 'all') -> ml_collections.ConfigDict:
    if arg != 'all' and arg not in BENCHMARKS:
        raise ValueError(f'configs/eval.py: unknown benchmark {arg!r}; choose from '
                         f'{list(BENCHMARKS) + ["all"]}')
    config = ml_collections.ConfigDict()
    # The model: anything egovideo_jax.load() reads; empty = random init (smoke tests only).
    config.checkpoint = ''
    config.variant = 'B/16'
    config.mode = 'slowfast'
    config.num_frames = 4  # the temporal table length T0; a checkpoint's own wins
    config.seed = 0
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    config.benchmarks = BENCHMARKS if arg == 'all' else (arg,)
    for name in config.benchmarks:
        config[name] = default_config(name)
    config.lock()  # overrides of unknown keys fail, naming the key
    return config

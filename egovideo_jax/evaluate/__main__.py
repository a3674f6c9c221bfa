"""Zero-shot evaluation of an EgoVideo checkpoint.

    python -m egovideo_jax.evaluate --config=configs/eval.py:ek100_mir --workdir=OUT \\
        --config.checkpoint=egovideo_b16.pt --config.variant=B/16 --config.mode=slowfast \\
        --config.ek100_mir.root=EK100/videos \\
        --config.ek100_mir.clips_csv=.../EPIC_100_retrieval_test.csv \\
        --config.ek100_mir.sentences_csv=.../EPIC_100_retrieval_test_sentence.csv \\
        --config.ek100_mir.relevancy_pkl=.../caption_relevancy_EPIC_100_retrieval_test.pkl

Every annotation file is read and checked before the model loads. Per benchmark: a printed
table and `OUT/<benchmark>/metrics.json` (MIR also `retrievals.png`).
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None,
                                          'configs/eval.py:BENCHMARK (or :all)')
_WORKDIR = flags.DEFINE_string('workdir', None, 'metrics and figures go to WORKDIR/<benchmark>',
                               required=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    logging.set_verbosity(logging.WARNING)
    config = _CONFIG.value
    if config is None:
        raise app.UsageError('--config=configs/eval.py:BENCHMARK is required')
    import jax

    from egovideo_jax.api import load
    from egovideo_jax.evaluate.registry import build_evaluators
    from egovideo_jax.parallel import sharding

    try:
        mesh = sharding.make_mesh(config.mesh)
        evaluators = build_evaluators({name: config[name] for name in config.benchmarks},
                                      workdir=_WORKDIR.value, mesh=mesh, config_key='config')
        for evaluator in evaluators.values():
            evaluator.prepare()
        if not config.checkpoint:
            print('warning: no --config.checkpoint; the model is randomly initialised and its '
                  'metrics are meaningless', file=sys.stderr)
        model = load(config.checkpoint or None, variant=config.variant, mode=config.mode,
                     num_frames=config.num_frames, seed=config.seed)
        model.params = jax.device_put(model.params, sharding.replicated(mesh))
        for evaluator in evaluators.values():
            evaluator.run(model)
    except ValueError as error:
        sys.exit(f'error: {error}')


if __name__ == '__main__':
    app.run(main)

"""egovideo-jax entry point: co-training driven by an ml_collections config.

    python main.py --config=configs/cotrain.py:demo --workdir=/tmp/egovideo_demo
    python main.py --config=configs/cotrain.py:b16 --workdir=gs://bucket/run \\
        --config.data.train=/data/hod_records --config.init.checkpoint=ViT-B-16.pt

Every config field can be overridden with --config.a.b=value. Re-running the same command
resumes from the newest checkpoint in the workdir.
"""
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/cotrain.py:demo',
                                          'training config file[:variant[,stage]]')
_WORKDIR = flags.DEFINE_string('workdir', None, 'checkpoints, logs and reports go here',
                               required=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    logging.set_verbosity(logging.WARNING)  # Orbax reports every file it writes at INFO
    import jax

    from egovideo_jax.demo.build import prepare_demo_data
    from egovideo_jax.train.config_checks import validate
    from egovideo_jax.train.trainer import maybe_initialize_distributed, train
    maybe_initialize_distributed()  # before anything asks JAX about devices
    config = _CONFIG.value
    validate(config, num_devices=jax.device_count(), process_count=jax.process_count(),
             backend=jax.default_backend())
    if jax.process_index() == 0:
        prepare_demo_data(config, Path(_WORKDIR.value))  # when data.build_demo asks for it
    train(config, _WORKDIR.value)


if __name__ == '__main__':
    app.run(main)

"""EgoVideo co-training configs.

    python main.py --config=configs/cotrain.py:VARIANT[,STAGE] --workdir=DIR [--config.a.b=v]

VARIANT: `demo` (tiny model on the embedded demo records, CPU, minutes), `b16`, `l14_336`
(paper-scale settings). STAGE: `stage1` (single branch, 4 frames, the whole model trains),
`stage2` (slow/fast, backbone frozen; adapters, projections and fusion train) or `joint`
(default: the slow branch trains the backbone, the fast branch trains the adapters through
the frozen shared weights). Durations are in steps; `num_epochs` converts when
`total_steps` is -1.
"""
import ml_collections

NO_DECAY = ('.*/bias', '.*/scale', '.*embedding.*', 'logit_scale', '.*/gamma')
STAGES = {
    'stage1': dict(mode='single', trainable=('.*',)),
    'stage2': dict(mode='slowfast', trainable=(
        'visual/blocks[^/]*/adapter/.*', 'visual/image_projection', 'textual/text_projection',
        'slowfast_projection')),
    'joint': dict(mode='slowfast', trainable=('.*',)),
}
VARIANTS = {
    'demo': dict(model='demo', batch_size=16, lr=5e-4, warmup_steps=20, total_steps=1500,
                 crop_size=64, dtype='float32', scan_layers=False, remat_policy='none',
                 mesh_data=-1, mesh_fsdp=1,
                 worker_count=0, log_every=50, checkpoint_every=500, num_epochs=0),
    # Paper-scale global batches (B/16: the reference's 16 GPUs x 128; L/14-336: 4 x its
    # 16 x 8) with full remat and attention 'auto' (splash on TPU, chunked on CPU): each
    # stage compiles and fits a TPU slice with >= 10% HBM to spare (benchmarks/README.md,
    # fit table). B/16's state is small enough to replicate (data parallel); L/14-336 shards
    # parameters and optimizer state over every device (fsdp).
    'b16': dict(model='B/16', batch_size=2048, lr=4e-5, warmup_steps=1000, total_steps=-1,
                crop_size=224, dtype='bfloat16', scan_layers=True, remat_policy='full',
                mesh_data=-1, mesh_fsdp=1, worker_count=8, log_every=50,
                checkpoint_every=1000, num_epochs=15),
    'l14_336': dict(model='L/14-336', batch_size=512, lr=1e-5, warmup_steps=1000,
                    total_steps=-1, crop_size=336, dtype='bfloat16', scan_layers=True,
                    remat_policy='full', mesh_data=1, mesh_fsdp=-1, worker_count=8,
                    log_every=50, checkpoint_every=1000, num_epochs=15),
}


def get_config(arg: str = 'demo') -> ml_collections.ConfigDict:
    variant, _, stage = arg.partition(',')
    stage = stage or 'joint'
    if variant not in VARIANTS:
        raise ValueError(f'configs/cotrain.py: unknown variant {variant!r}; '
                         f'choose from {sorted(VARIANTS)}')
    if stage not in STAGES:
        raise ValueError(f'configs/cotrain.py: unknown stage {stage!r}; '
                         f'choose from {sorted(STAGES)}')
    v, s = VARIANTS[variant], STAGES[stage]

    config = ml_collections.ConfigDict()
    config.variant = variant
    config.stage = stage
    config.seed = 0

    config.model = ml_collections.ConfigDict(dict(
        variant=v['model'], mode=s['mode'], num_frames=4, fast_frames=16, dtype=v['dtype'],
        scan_layers=v['scan_layers'], remat_policy=v['remat_policy'],
        # egovideo_jax/model/transformer.py ATTENTION_IMPLEMENTATIONS; 'cudnn' on NVIDIA GPUs
        attention='auto'))
    # Initial weights: anything egovideo_jax.load() reads (OpenAI CLIP, reference .pt, ours).
    config.init = ml_collections.ConfigDict(dict(checkpoint=''))

    config.data = ml_collections.ConfigDict(dict(
        train='', build_demo=variant == 'demo', batch_size=v['batch_size'],
        # The demo's text tower starts from scratch: 'mixed' (narrations and HOD narrations)
        # teaches it the narration language its held-out queries use as well.
        crop_size=v['crop_size'], text_field='mixed' if variant == 'demo' else 'hod',
        flip_swaps_sides=True,
        worker_count=v['worker_count'], prefetch=2, on_error='fail', max_skip_fraction=0.01,
        tokenizer='clip'))

    config.total_steps = v['total_steps']
    config.num_epochs = v['num_epochs']
    config.optim = ml_collections.ConfigDict(dict(
        lr=v['lr'], b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01,
        warmup_steps=v['warmup_steps'], schedule='cosine', grad_clip=0.0,
        # Rule lists are tuples so that flags can override them:
        # --config.optim.frozen='("logit_scale", "visual/.*/adapter/.*")'.
        grad_accum_steps=1, trainable=tuple(s['trainable']),
        frozen=('logit_scale',),  # freeze_temperature, as the reference
        lr_multipliers=(),
        # '.*/gamma' is the adapters' scale: single mode has none, and a rule that matches
        # nothing is an error (optimizer.check_patterns).
        no_decay=tuple(r for r in NO_DECAY if s['mode'] == 'slowfast' or r != '.*/gamma')))

    config.mesh = ml_collections.ConfigDict(dict(data=v['mesh_data'], fsdp=v['mesh_fsdp'],
                                                 tensor=1))
    config.log_every = v['log_every']
    config.checkpoint = ml_collections.ConfigDict(dict(
        every_steps=v['checkpoint_every'], keep=3, best_metric='', best_mode='max',
        keep_best=1, async_save=True))
    # Evaluators (egovideo_jax/evaluate/registry.py), run every `every_steps` and at the end.
    config.evals = ml_collections.ConfigDict()
    if variant == 'demo':
        config.evals.demo = ml_collections.ConfigDict(dict(
            type='demo_retrieval', records='', actions_csv='', text_field='narration',
            batch_size=16, every_steps=300,  # ~5 evaluations: the eval curves show learning
            num_frames=16))  # single-branch models only (slow/fast: always 4 + 16)
    # The embedded demo dataset (built through the HOD pipeline when data.build_demo is set
    # and data.train is empty); dir '' means WORKDIR/demo_data.
    config.demo = ml_collections.ConfigDict(dict(
        dir='', train_clips=600, heldout_clips=200, size=96, seed=0, workers=2,
        # Two objects: the actions (18 per object), not 30 objects, are what the demo model
        # must learn (egovideo_jax/demo/actions.py demo_objects; 0: all 30).
        num_objects=2))
    # The end-of-run report (egovideo_jax/train/report.py), written by process 0 when a run
    # reaches total_steps: WORKDIR/report/{README.md,report.json,hod_example.png} and the final
    # parameters in the reference PyTorch layout, WORKDIR/export/egovideo_VARIANT.{pt,safetensors}.
    # Exporting is on for every variant: on one host the parameters are all addressable (even
    # FSDP-sharded, B/16 is ~0.6 GB); when they are sharded over several processes the export
    # is skipped and the report gives the converter command for the final checkpoint.
    config.report = ml_collections.ConfigDict(dict(
        export_torch=True, export_safetensors=True, hod_example=True))
    config.lock()  # overrides of unknown keys fail, naming the key
    return config

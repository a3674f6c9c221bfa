"""Fine-tuning configs: EK-100 MIR, EK-100 CLS, EGTEA, and their demo analogues.

    python main.py --config=configs/finetune.py:TASK[,VARIANT] --workdir=DIR \\
        --config.init.checkpoint=CKPT [--config.data.train=RECORDS] [--config.a.b=v]

TASK: `ek100_mir` (max-margin ranking, relevancy-sampled captions), `ek100_cls` (verb / noun /
action heads), `egtea` (106 action classes, 3 crops x 10 clips at test time), `demo_mir` and
`demo_cls` (the embedded demo: graded relevancy from shared verbs / objects, and its action
classes; CPU, minutes). VARIANT: `b16` (default for the real tasks; slow/fast), `b16_single`,
`l14_336`, `l14_336_single`, `demo` (default for the demo tasks; slow/fast), `demo_single`.

`init.checkpoint` takes anything `egovideo_jax.load` reads (a co-training checkpoint
directory, a reference `.pt`, OpenAI CLIP); the trainer prints what it loaded, left new (the
heads) and left unused. What trains:
- single-branch models: the whole vision tower (and, for MIR, the text tower);
- slow/fast models: the slow branch trains the shared backbone, the fast branch trains its
  adapters through the frozen shared weights (as in co-training), the fusion projection
  trains; for MIR the text tower trains too.
- classification heads train at the base lr, the backbone at `BACKBONE_LR_MULTIPLIER` x it
  (LaViLa's 0.1); the text tower is carried frozen so the export is a whole EgoVideo.

The recipes are LaViLa's / AVION's (../shared/specs/finetune.md; docs/finetuning.md) at their
global batch. Durations are epochs of the training records (`num_epochs`) unless
`total_steps` is set; warm-up is in steps (one epoch of EK-100 at the recipe's batch).
"""
import ml_collections

TASK_TYPES = {'ek100_mir': 'mir', 'demo_mir': 'mir', 'ek100_cls': 'classification',
              'egtea': 'classification', 'demo_cls': 'classification'}
DEMO_TASKS = ('demo_mir', 'demo_cls')
BACKBONE_LR_MULTIPLIER = 0.1
EK100_CLASSES = dict(verb=97, noun=300, action=3806)
EGTEA_CLASSES = dict(verb=-1, noun=-1, action=106)
NO_DECAY = ('.*/bias', '.*/scale', '.*embedding.*', '.*logit_scale', '.*/gamma')

VARIANTS = {
    'b16': dict(model='B/16', mode='slowfast', crop_size=224, dtype='bfloat16',
                scan_layers=True, remat_policy='full', mesh_fsdp=1, worker_count=8),
    'l14_336': dict(model='L/14-336', mode='slowfast', crop_size=336, dtype='bfloat16',
                    scan_layers=True, remat_policy='full', mesh_fsdp=-1, worker_count=8),
    'demo': dict(model='demo', mode='slowfast', crop_size=64, dtype='float32',
                 scan_layers=False, remat_policy='none', mesh_fsdp=1, worker_count=0),
}
for _name in list(VARIANTS):
    VARIANTS[f'{_name}_single'] = {**VARIANTS[_name], 'mode': 'single'}

# Per task: the recipe (LaViLa / AVION settings for the real tasks; minutes on CPU for the
# demo ones). Frames: single-branch models read `frames` frames (16, as the recipes) through
# their 4-frame temporal table; slow/fast models always read 4 + 16.
RECIPES = {
    'ek100_mir': dict(batch_size=512, optimizer='adamw', lr=3e-5, warmup_start_lr=1e-6,
                      end_lr=1e-5, weight_decay=0.01, momentum=0.9, num_epochs=100,
                      warmup_steps=131, frames=16, eval_every=655),  # 67217 clips / 512
    'ek100_cls': dict(batch_size=512, optimizer='sgd', lr=3e-3, warmup_start_lr=0.0,
                      end_lr=0.0, weight_decay=4e-5, momentum=0.9, num_epochs=100,
                      warmup_steps=131, frames=16, eval_every=655),
    'egtea': dict(batch_size=128, optimizer='sgd', lr=3e-3, warmup_start_lr=0.0, end_lr=0.0,
                  weight_decay=4e-5, momentum=0.9, num_epochs=100, warmup_steps=65,
                  frames=16, eval_every=650),  # 8299 train clips / 128
    'demo_mir': dict(batch_size=16, optimizer='adamw', lr=2e-4, warmup_start_lr=0.0,
                     end_lr=0.0, weight_decay=0.01, momentum=0.9, num_epochs=0,
                     warmup_steps=10, frames=16, eval_every=100, total_steps=300),
    'demo_cls': dict(batch_size=16, optimizer='adamw', lr=1e-3, warmup_start_lr=0.0,
                     end_lr=0.0, weight_decay=0.01, momentum=0.9, num_epochs=0,
                     warmup_steps=10, frames=16, eval_every=100, total_steps=300),
}


def _evals(task: str, recipe: dict) -> ml_collections.ConfigDict:
    """Evaluators run every `eval_every` steps and at the end; their files are set on the
    command line (`--config.evals.NAME.FIELD=...`), the demo's by the demo build."""
    every = recipe['eval_every']
    evals = ml_collections.ConfigDict()
    if task == 'ek100_mir':
        evals.ek100_mir = ml_collections.ConfigDict(dict(
            type='ek100_mir', root='', clips_csv='', sentences_csv='', relevancy_pkl='',
            batch_size=16, every_steps=every, num_frames=recipe['frames']))
    elif task == 'demo_mir':
        evals.demo_mir = ml_collections.ConfigDict(dict(
            type='demo_mir', records='', actions_csv='', batch_size=16, every_steps=every,
            num_frames=recipe['frames']))
    else:
        # The validation / test split as labelled records (python -m egovideo_jax.records
        # convert-epic / convert-egtea); EGTEA tests on 3 crops x 10 clips, averaged.
        views = dict(num_clips=10, num_crops=3) if task == 'egtea' else dict(num_clips=1,
                                                                            num_crops=1)
        name = 'demo_cls' if task == 'demo_cls' else task
        evals[name] = ml_collections.ConfigDict(dict(
            type='classification', records='', batch_size=16, every_steps=every,
            num_frames=recipe['frames'], **views))
    return evals


def get_config(arg: str = 'demo_cls') -> ml_collections.ConfigDict:
    task, _, variant = arg.partition(',')
    if task not in TASK_TYPES:
        raise ValueError(f'configs/finetune.py: unknown task {task!r}; '
                         f'choose from {sorted(TASK_TYPES)}')
    variant = variant or ('demo' if task in DEMO_TASKS else 'b16')
    if variant not in VARIANTS:
        raise ValueError(f'configs/finetune.py: unknown variant {variant!r}; '
                         f'choose from {sorted(VARIANTS)}')
    v, recipe, task_type = VARIANTS[variant], RECIPES[task], TASK_TYPES[task]
    slowfast = v['mode'] == 'slowfast'
    classification = task_type == 'classification'

    config = ml_collections.ConfigDict()
    config.variant = variant
    config.stage = task  # what the report and the memory tool call the run
    config.task = task_type  # egovideo_jax/train/tasks.py TASKS
    config.seed = 0

    config.model = ml_collections.ConfigDict(dict(
        variant=v['model'], mode=v['mode'], num_frames=4, fast_frames=16, dtype=v['dtype'],
        scan_layers=v['scan_layers'], remat_policy=v['remat_policy'], attention='auto'))
    config.init = ml_collections.ConfigDict(dict(checkpoint=''))

    config.data = ml_collections.ConfigDict(dict(
        train='', build_demo=task in DEMO_TASKS, batch_size=recipe['batch_size'],
        crop_size=v['crop_size'],
        num_frames=4 if slowfast else recipe['frames'],  # the slow (or only) branch's input
        # MIR: a caption drawn among those with relevancy > caption_threshold to the clip.
        text_field='caption' if task_type == 'mir' else 'narration', caption_threshold=0.1,
        labels=tuple(('verb', 'noun', 'action') if classification else ()),
        flip_swaps_sides=True, worker_count=v['worker_count'], prefetch=2, on_error='fail',
        max_skip_fraction=0.01, tokenizer='clip'))

    config.total_steps = recipe.get('total_steps', -1)
    config.num_epochs = recipe['num_epochs']
    if classification:
        trainable = ('backbone/visual/.*', 'head_.*',
                     *(('backbone/slowfast_projection',) if slowfast else ()))
        frozen = ()
        multipliers = (('backbone/.*', BACKBONE_LR_MULTIPLIER),)
    else:
        trainable, frozen, multipliers = ('.*',), ('logit_scale',), ()
    config.optim = ml_collections.ConfigDict(dict(
        optimizer=recipe['optimizer'], lr=recipe['lr'], momentum=recipe['momentum'],
        b1=0.9, b2=0.999, eps=1e-8, weight_decay=recipe['weight_decay'],
        warmup_steps=recipe['warmup_steps'], warmup_start_lr=recipe['warmup_start_lr'],
        end_lr=recipe['end_lr'], schedule='cosine', grad_clip=0.0, grad_accum_steps=1,
        trainable=trainable, frozen=frozen, lr_multipliers=multipliers,
        no_decay=tuple(r for r in NO_DECAY if slowfast or r != '.*/gamma')))
    if task_type == 'mir':
        # LaViLa / AVION: margin 0.2 over every off-diagonal pair of the global batch.
        # adaptive_margin: EgoVLP's relu(w * margin - (s_pos - s_neg)), w the caption's
        # relevancy (EgoVLP uses margin 0.4 with it).
        config.loss = ml_collections.ConfigDict(dict(margin=0.2, adaptive_margin=False))
    else:
        classes = EGTEA_CLASSES if task == 'egtea' else (
            EK100_CLASSES if task == 'ek100_cls' else dict(verb=-1, noun=-1, action=-1))
        config.head = ml_collections.ConfigDict(dict(
            # 'verb_noun_action' (LaViLa: three heads, summed losses) or 'action' (AVION:
            # one head, verb / noun by marginalisation at evaluation).
            kind='action' if task == 'egtea' else 'verb_noun_action',
            # -1: read from the training records' classes.json
            num_classes=ml_collections.ConfigDict(classes),
            dropout=0.5, label_smoothing=0.1,
            mixup=0.0, cutmix=0.0, switch_prob=0.5))  # AVION: mixup 0.8, cutmix 1.0
        if task == 'egtea':
            config.data.labels = ('action',)

    config.mesh = ml_collections.ConfigDict(dict(data=-1 if v['mesh_fsdp'] == 1 else 1,
                                                 fsdp=v['mesh_fsdp'], tensor=1))
    config.log_every = 10 if task in DEMO_TASKS else 50
    best = {'mir': 'map_mean', 'classification': 'action_top1'}[task_type]
    evals = _evals(task, recipe)
    config.checkpoint = ml_collections.ConfigDict(dict(
        every_steps=recipe['eval_every'], keep=2,
        best_metric=f'eval/{next(iter(evals))}/{best}', best_mode='max', keep_best=1,
        async_save=True))
    config.evals = evals
    # The demo's labelled records (egovideo_jax/demo/finetune.py), built when data.build_demo
    # is set and data.train is empty; dir '' means WORKDIR/demo_data.
    config.demo = ml_collections.ConfigDict(dict(
        dir='', train_clips=600, heldout_clips=200, size=96, seed=0, workers=2,
        num_objects=2))
    config.report = ml_collections.ConfigDict(dict(
        export_torch=True, export_safetensors=True, hod_example=False))
    config.lock()
    return config

"""Fine-tuning pieces without a training run: every configs/finetune.py variant validates, the
classifier is a whole EgoVideo plus heads, mixup / cutmix known answers, the classifier's
export layout and the config checks that name the bad field."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.finetune import TASK_TYPES, VARIANTS, get_config
from egovideo_jax.model.classifier import VideoClassifier
from egovideo_jax.model.config import get_model_config
from egovideo_jax.model.egovideo import EgoVideo, dummy_inputs
from egovideo_jax.train.config_checks import validate
from egovideo_jax.train.mixing import mix_batch
from egovideo_jax.train.tasks import task_of


def _validated(arg, **changes):
    config = get_config(arg)
    with config.unlocked():
        config.data.train = '/'
        for path, value in changes.items():
            section, field = path.split('.')
            config[section][field] = value
    validate(config, num_devices=8)
    return config


@pytest.mark.parametrize('task', sorted(TASK_TYPES))
@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_every_finetune_config_validates(task, variant):
    config = _validated(f'{task},{variant}')
    assert config.task == TASK_TYPES[task]
    assert task_of(config).name == config.task


@pytest.mark.parametrize('changes, message', [
    ({'head.kind': 'verbs'}, r'config\.head\.kind'),
    ({'head.label_smoothing': 1.0}, r'config\.head\.label_smoothing'),
    ({'head.mixup': -1.0}, r'config\.head\.mixup'),
    ({'optim.optimizer': 'lion'}, r'config\.optim\.optimizer'),
    ({'data.labels': ('verb',)}, r"trains \['noun', 'action'\]"),
])
def test_bad_finetune_fields_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        _validated('demo_cls', **changes)


def test_bad_margin_is_named():
    with pytest.raises(ValueError, match=r'config\.loss\.margin'):
        _validated('demo_mir', **{'loss.margin': 0.0})


def test_classifier_holds_a_whole_egovideo_and_its_heads():
    config = get_model_config('demo', 'slowfast', 4)
    classifier = VideoClassifier(config, heads=(('verb', 3), ('action', 5)), dropout=0.5)
    params = classifier.init(jax.random.PRNGKey(0), *classifier.example_inputs())['params']
    egovideo = EgoVideo(config)
    whole = egovideo.init(jax.random.PRNGKey(0), *dummy_inputs(config))['params']
    assert jax.tree_util.tree_structure(params['backbone']) == \
        jax.tree_util.tree_structure(whole)
    assert params['head_verb']['kernel'].shape == (config.embed_dim, 3)
    video, fast = classifier.example_inputs()
    logits = classifier.apply({'params': params}, video, fast)
    assert {name: out.shape for name, out in logits.items()} == {'verb': (1, 3),
                                                                  'action': (1, 5)}
    # dropout only in training, and then it changes the logits
    train = classifier.apply({'params': params}, video + 1, fast + 1, train=True,
                             rngs={'dropout': jax.random.PRNGKey(1)})
    again = classifier.apply({'params': params}, video + 1, fast + 1)
    assert not np.allclose(train['verb'], again['verb'])


def test_classification_export_adds_torch_linear_heads(tmp_path):
    config = get_config('demo_cls,demo_single')
    with config.unlocked():
        config.head.num_classes.verb, config.head.num_classes.noun = 3, 2
        config.head.num_classes.action = 4
    task = task_of(config)
    module = task.build_module()
    params = nn.unbox(module.init(jax.random.PRNGKey(0), *module.example_inputs())['params'])
    state = task.reference_state(params, module.config)
    np.testing.assert_array_equal(state['head.verb.weight'],
                                  np.asarray(params['head_verb']['kernel']).T)
    assert state['head.action.bias'].shape == (4,)
    assert any(key.startswith('visual.') for key in state)


def _videos(batch=4):
    rng = np.random.default_rng(0)
    return {'slow': jnp.asarray(rng.standard_normal((batch, 2, 8, 8, 3)), jnp.float32),
            'fast': jnp.asarray(rng.standard_normal((batch, 4, 8, 8, 3)), jnp.float32)}


def test_mixup_blends_clips_and_targets_with_one_lam():
    videos = _videos()
    targets = {'verb': jnp.array([0, 1, 2, -1])}
    mixed, soft = mix_batch(jax.random.PRNGKey(3), videos, targets, {'verb': 3},
                            mixup_alpha=0.8, cutmix_alpha=0.0)
    flipped = jnp.flip(videos['slow'], 0)
    # recover lam from one pixel and check every clip, both branches and the targets
    lam = float((mixed['slow'][0, 0, 0, 0, 0] - flipped[0, 0, 0, 0, 0])
                / (videos['slow'][0, 0, 0, 0, 0] - flipped[0, 0, 0, 0, 0]))
    np.testing.assert_allclose(mixed['slow'], lam * videos['slow'] + (1 - lam) * flipped,
                               atol=1e-5)
    np.testing.assert_allclose(mixed['fast'], lam * videos['fast']
                               + (1 - lam) * jnp.flip(videos['fast'], 0), atol=1e-5)
    expected = np.array([[lam, 0, 0], [0, lam, 1 - lam], [0, 1 - lam, lam], [1 - lam, 0, 0]])
    np.testing.assert_allclose(soft['verb'], expected, atol=1e-5)


def test_cutmix_pastes_one_box_and_weights_targets_by_its_area():
    videos = _videos()
    targets = {'action': jnp.array([0, 1, 2, 3])}
    mixed, soft = mix_batch(jax.random.PRNGKey(5), videos, targets, {'action': 4},
                            mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0)
    pasted = np.asarray(mixed['slow'] != videos['slow'])[..., 0]  # [B, T, H, W]
    box = pasted[0, 0]
    assert all((pasted[i, t] == box).all() for i in range(4) for t in range(2))
    kept = 1 - box.mean()
    np.testing.assert_allclose(soft['action'][0], [kept, 0, 0, 1 - kept], atol=1e-6)
    np.testing.assert_allclose(np.asarray(soft['action']).sum(1), 1.0, atol=1e-6)

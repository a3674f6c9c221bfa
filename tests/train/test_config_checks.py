"""configs/cotrain.py (variants x stages, paper settings) and `validate`'s field-naming errors."""
import re
import subprocess
import sys

import flax.linen as nn
import pytest

from configs.cotrain import STAGES, VARIANTS
from egovideo_jax.model.config import get_model_config
from egovideo_jax.model.egovideo import EgoVideo
from egovideo_jax.train.config_checks import validate
from egovideo_jax.train.optimizer import make_optimizer, param_paths, trainable_mask
from egovideo_jax.train.state import abstract_params
from tests.helpers.train_fixtures import REPO, get_config, subprocess_env

MODEL = {'demo': 'demo', 'b16': 'B/16', 'l14_336': 'L/14-336'}
CROP = {'demo': 64, 'b16': 224, 'l14_336': 336}
STAGE_MODE = {'stage1': 'single', 'stage2': 'slowfast', 'joint': 'slowfast'}


@pytest.mark.parametrize('stage', sorted(STAGES))
@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_every_variant_and_stage_builds_with_its_mode_and_rules(variant, stage, tmp_path):
    config = get_config(f'{variant},{stage}')
    assert (config.variant, config.stage) == (variant, stage)
    assert config.model.variant == MODEL[variant]
    assert config.data.crop_size == CROP[variant]
    assert config.model.mode == STAGE_MODE[stage]
    if stage == 'stage2':  # backbone frozen: adapters, projections and the fusion train
        assert config.optim.trainable == (
            'visual/blocks[^/]*/adapter/.*', 'visual/image_projection',
            'textual/text_projection', 'slowfast_projection')
    else:
        assert config.optim.trainable == ('.*',)
    assert config.optim.frozen == ('logit_scale',)  # the temperature stays fixed
    assert config.report.export_torch and config.report.export_safetensors
    config.data.train = str(tmp_path)
    config.data.build_demo = False
    validate(config, num_devices=8, reference=get_config(f'{variant},{stage}'))


def test_default_stage_is_joint():
    assert get_config('b16').stage == 'joint'
    assert get_config().variant == 'demo'


@pytest.mark.parametrize('variant, lr', [('b16', 4e-5), ('l14_336', 1e-5)])
def test_paper_scale_variants_have_the_paper_optimiser_settings(variant, lr):
    config = get_config(variant)
    optim = config.optim
    assert optim.lr == lr
    assert (optim.b1, optim.b2, optim.eps, optim.weight_decay) == (0.9, 0.999, 1e-8, 0.01)
    assert config.num_epochs == 15 and config.total_steps == -1  # duration from epochs
    assert optim.frozen == ('logit_scale',)
    assert optim.schedule == 'cosine'
    assert config.model.dtype == 'bfloat16' and config.model.num_frames == 4


def test_unknown_variant_or_stage_is_named():
    with pytest.raises(ValueError, match=r"configs/cotrain\.py: unknown variant 'b32'"):
        get_config('b32')
    with pytest.raises(ValueError, match=r"configs/cotrain\.py: unknown stage 'stage3'"):
        get_config('b16,stage3')


@pytest.mark.parametrize('scan_layers', [False, True])
@pytest.mark.parametrize('stage', sorted(STAGES))
def test_stage_rules_match_the_model_parameters(stage, scan_layers):
    """Every rule of every stage names real parameters, in both layer layouts; stage2 trains
    exactly the adapters and projections."""
    config = get_config(f'demo,{stage}')
    model_config = get_model_config('tiny', config.model.mode)
    params = nn.unbox(abstract_params(EgoVideo(model_config, scan_layers=scan_layers),
                                      model_config))
    optim = config.optim.to_dict()
    optim['total_steps'] = 10
    make_optimizer(params, type(config)(optim))  # checks every rule matches something
    mask = param_paths(trainable_mask(params, optim['trainable'], optim['frozen']))
    assert not mask['logit_scale']
    trained = {path for path, on in mask.items() if on}
    if stage == 'stage2':
        assert trained == {p for p in mask if '/adapter/' in p or p in (
            'visual/image_projection', 'textual/text_projection', 'slowfast_projection')}
        assert any('/adapter/' in p for p in trained)
    else:
        assert trained == set(mask) - {'logit_scale'}
    if stage == 'stage1':
        assert not any('adapter' in p or 'slowfast' in p for p in mask)


# ----------------------------------------------------------------------------- validate

@pytest.fixture
def demo(tmp_path):
    """A valid demo config on an existing (empty) data directory."""
    config = get_config('demo')
    config.data.train = str(tmp_path)
    config.data.build_demo = False
    validate(config, num_devices=1)
    return config


def test_batch_must_divide_over_the_data_parallel_devices(demo):
    validate(demo, num_devices=8)  # 16 over 8
    with pytest.raises(ValueError, match=re.escape(
            'config.data.batch_size=16 is not divisible by the data-parallel size 3')):
        validate(demo, num_devices=3)
    demo.optim.grad_accum_steps = 32
    with pytest.raises(ValueError, match=r'config\.data\.batch_size=16 .*'
                                         r'config\.optim\.grad_accum_steps=32'):
        validate(demo, num_devices=1)


def test_attention_choice_is_checked(demo):
    demo.model.attention = 'flash'
    with pytest.raises(ValueError, match=r"config\.model\.attention='flash'"):
        validate(demo, num_devices=1)
    demo.model.attention = 'cudnn'
    with pytest.raises(ValueError, match=r"attention='cudnn' needs NVIDIA GPUs"):
        validate(demo, num_devices=1, backend='cpu')
    demo.model.dtype = 'bfloat16'
    validate(demo, num_devices=1, backend='gpu')


def test_batch_must_divide_over_the_processes(demo):
    demo.data.batch_size = 12
    with pytest.raises(ValueError, match=r'config\.data\.batch_size=12 is not divisible by '
                                         r'the 8 processes'):
        validate(demo, num_devices=4, process_count=8)


def test_mesh_must_fit_the_devices(demo):
    demo.mesh.data, demo.mesh.fsdp = 2, 2
    with pytest.raises(ValueError, match=r'config\.mesh .* needs 4 devices, 2 are available'):
        validate(demo, num_devices=2)


def test_crop_size_must_match_the_model(demo):
    demo.data.crop_size = 224
    with pytest.raises(ValueError, match=r'config\.data\.crop_size=224 does not match the '
                                         r'demo model input of 64 px'):
        validate(demo, num_devices=1)


def test_data_path_must_be_given_and_exist(demo, tmp_path):
    demo.data.train = ''
    with pytest.raises(ValueError, match=r'config\.data\.train is empty'):
        validate(demo, num_devices=1)
    missing = str(tmp_path / 'no_such_records')
    demo.data.train = missing
    with pytest.raises(ValueError, match=re.escape(f'config.data.train={missing!r} does not '
                                                   'exist')):
        validate(demo, num_devices=1)


@pytest.mark.parametrize('field, value', [
    ('model.variant', 'H/14'), ('model.mode', 'triple'), ('model.dtype', 'float16'),
    ('model.remat_policy', 'everything'), ('model.num_frames', 0), ('optim.lr', 0.0),
    ('log_every', 0)])
def test_bad_values_are_errors_naming_the_field(demo, field, value):
    *parents, leaf = field.split('.')
    node = demo
    for parent in parents:
        node = node[parent]
    node[leaf] = value
    with pytest.raises(ValueError, match=re.escape(f'config.{field}')):
        validate(demo, num_devices=1)


def test_duration_must_be_given(demo):
    demo.total_steps, demo.num_epochs = -1, 0
    with pytest.raises(ValueError, match=r'config\.total_steps .* config\.num_epochs'):
        validate(demo, num_devices=1)


def test_unknown_keys_fail(demo):
    with pytest.raises(AttributeError, match='bogus'):
        demo.model.bogus = 1  # the config is locked
    with pytest.raises(AttributeError, match='bogus'):
        demo.bogus = 1
    # A config built some other way is checked against the variant's keys.
    demo.unlock()
    demo.model.bogus = 1
    demo.evals.retrieval = {'every_steps': 100}  # evaluator settings are free-form
    with pytest.raises(ValueError, match=re.escape("unknown config key(s) ['model.bogus']")):
        validate(demo, num_devices=1, reference=get_config('demo'))


def test_main_py_rejects_an_unknown_override():
    result = subprocess.run(
        [sys.executable, 'main.py', '--config=configs/cotrain.py:demo', '--config.bogus=1',
         '--workdir=/nonexistent/never_created'],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert 'bogus' in result.stderr

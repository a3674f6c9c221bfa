"""The evaluator registry and configs: construction from `config.<name>.type` + fields, errors
that name the config key, the eval config variants."""

import importlib.util
from pathlib import Path

import ml_collections
import pytest

from egovideo_jax.evaluate.registry import (
    COMMON_DEFAULTS,
    EVALUATOR_MODULES,
    EVALUATORS,
    Evaluator,
    build_evaluators,
    default_config,
    evaluator_class,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ['egomcq', 'egtea', 'ek100_cls', 'ek100_mir']


def eval_config_module():
    spec = importlib.util.spec_from_file_location('eval_config', REPO_ROOT / 'configs/eval.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_benchmark_is_registered():
    for name in EVALUATOR_MODULES:  # each module registers itself when first asked for
        assert evaluator_class(name) is EVALUATORS[name]
    assert sorted(EVALUATORS) == sorted(BENCHMARKS + ['classification', 'demo_mir',
                                                   'demo_retrieval', 'linear_probe'])
    assert all(issubclass(cls, Evaluator) and cls.type == name
               for name, cls in EVALUATORS.items())


def test_build_is_lazy_and_fills_defaults(tmp_path):
    evals = ml_collections.ConfigDict({
        'mir': {'type': 'ek100_mir', 'root': '/nowhere', 'every_steps': 500},
        'egtea': {'type': 'egtea', 'batch_size': 8}})
    evaluators = build_evaluators(evals, workdir=tmp_path)  # reads no file
    mir = evaluators['mir']
    assert (mir.type, mir.name, mir.outdir) == ('ek100_mir', 'mir', tmp_path / 'mir')
    assert mir.config.root == '/nowhere' and mir.config.batch_size == COMMON_DEFAULTS['batch_size']
    assert evaluators['egtea'].config.batch_size == 8
    assert [mir.should_run(s) for s in (0, 499, 500, 1000)] == [True, False, True, True]
    assert not evaluators['egtea'].should_run(500)  # every_steps 0: never during training


@pytest.mark.parametrize('section, message', [
    ({'root': 'x'}, r'config\.evals\.bench\.type is not set'),
    ({'type': 'kinetics'}, r"config\.evals\.bench\.type: unknown evaluator type 'kinetics'"),
    ({'type': 'egtea', 'roots': 'x'}, r'config\.evals\.bench\.roots: not a field of the egtea'),
    ({'type': 'egtea', 'batch_size': 0}, r'config\.evals\.bench\.batch_size must be >= 1'),
])
def test_config_errors_name_the_key(section, message):
    with pytest.raises(ValueError, match=message):
        build_evaluators({'bench': section})


def test_unset_and_missing_paths_name_the_key(tmp_path):
    evaluator = build_evaluators({'egtea': {'type': 'egtea'}}, config_key='config')['egtea']
    with pytest.raises(ValueError, match=r'config\.egtea\.action_idx is not set'):
        evaluator.prepare()
    evaluator.config.action_idx = str(tmp_path / 'action_idx.txt')
    with pytest.raises(ValueError, match=r'config\.egtea\.action_idx: .*action_idx\.txt does '
                                         'not exist'):
        evaluator.prepare()


def test_run_needs_a_model_or_params_with_their_config():
    evaluator = build_evaluators({'egtea': {'type': 'egtea'}})['egtea']
    with pytest.raises(TypeError, match='params together with their EgoVideoConfig'):
        evaluator.run({'params': {}})


@pytest.mark.parametrize('arg, sections', [('all', BENCHMARKS)] + [(b, [b]) for b in BENCHMARKS])
def test_eval_config_variants(arg, sections):
    config = eval_config_module().get_config(arg)
    assert sorted(config.benchmarks) == sections
    for name in sections:
        assert config[name].to_dict() == default_config(name).to_dict()
    with pytest.raises(AttributeError):
        config.not_a_field = 1  # locked


def test_eval_config_unknown_benchmark():
    with pytest.raises(ValueError, match="configs/eval.py: unknown benchmark 'ek200'"):
        eval_config_module().get_config('ek200')

"""`DataConfig` names what is wrong with a data config when it is built."""
import ml_collections
import pytest

from egovideo_jax.input.config import DataConfig

VALUES = {'path': 'records/', 'batch_size': 8, 'crop_size': 32, 'mode': 'single'}


def test_config_builds_from_a_dict_or_a_config_dict():
    assert DataConfig(**VALUES).batch_size == 8
    assert DataConfig(**ml_collections.ConfigDict(VALUES)).mode == 'single'


def test_config_names_bad_keys():
    with pytest.raises(TypeError, match='unexpected keyword argument .frames_per_clip'):
        DataConfig(**VALUES, frames_per_clip=4)
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'batch_size'"):
        DataConfig(path='records/')


def test_config_names_bad_values():
    with pytest.raises(ValueError, match='DataConfig.mode must be one of'):
        DataConfig(**{**VALUES, 'mode': 'fastslow'})

"""Global batch assembly on a simulated 8-device CPU mesh (own process: XLA_FLAGS must be set
before jax is imported)."""
import os
import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent('''
    import os
    os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'
    os.environ['JAX_PLATFORMS'] = 'cpu'
    import jax
    import numpy as np
    from jax.sharding import Mesh, PartitionSpec

    from egovideo_jax.parallel.batching import global_batch

    assert jax.device_count() == 8, jax.devices()
    local = {'slow': np.arange(16 * 2 * 3, dtype=np.float32).reshape(16, 2, 3),
             'tokens': np.arange(16 * 5, dtype=np.int32).reshape(16, 5),
             'index': np.arange(16, dtype=np.int64) + 100}

    meshes = {
        'data_fsdp': (Mesh(np.array(jax.devices()).reshape(4, 2), ('data', 'fsdp')),
                      PartitionSpec(('data', 'fsdp'))),
        'data_only': (Mesh(np.array(jax.devices()), ('data',)), PartitionSpec(('data',))),
    }
    for name, (mesh, spec) in meshes.items():
        batch = global_batch(local, mesh)
        for key, value in local.items():
            array = batch[key]
            assert array.shape == value.shape, (name, key, array.shape)
            # int64 becomes int32 unless jax_enable_x64: jax's dtype canonicalisation.
            expected_dtype = jax.dtypes.canonicalize_dtype(value.dtype)
            assert array.dtype == expected_dtype, (name, key, array.dtype)
            assert array.sharding.spec == spec, (name, key, array.sharding.spec)
            assert len(array.addressable_shards) == 8
            for shard in array.addressable_shards:
                assert shard.data.shape[0] == 2, (name, key, shard.data.shape)
                np.testing.assert_array_equal(np.asarray(shard.data), value[shard.index])
            np.testing.assert_array_equal(np.asarray(array), value)

    mesh = meshes['data_fsdp'][0]
    for bad, message in (({'x': np.zeros((6, 2))}, 'not divisible'),
                         ({'x': np.zeros((8,)), 'y': np.zeros((16,))}, 'local examples')):
        try:
            global_batch(bad, mesh)
        except ValueError as error:
            assert message in str(error), error
        else:
            raise AssertionError(f'{bad} should be rejected')
    try:
        global_batch(local, mesh, data_axes=('batch',))
    except ValueError as error:
        assert 'none of the batch axes' in str(error), error
    else:
        raise AssertionError('unknown data axes should be rejected')
    print('OK')
''')


def test_global_batch_on_8_simulated_devices():
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
               JAX_PLATFORMS='cpu')
    result = subprocess.run([sys.executable, '-c', _SCRIPT], env=env, capture_output=True,
                            text=True, timeout=120,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert result.returncode == 0 and 'OK' in result.stdout, result.stdout + result.stderr

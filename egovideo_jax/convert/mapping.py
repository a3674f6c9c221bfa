"""The PyTorch reference key layout <-> our Flax parameter tree, as one table per config.

Each `Entry` maps one reference key to one or more Flax leaves (the packed qkv maps to three)
with a named transform. The table is generated from the model config, so B/16, L/14-336 and
the tiny variants share one code path. Flax paths are in the unrolled (`blocks_{i}`) layout.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, Sequence

import numpy as np

from egovideo_jax.model.config import EgoVideoConfig

FlaxPath = tuple[str, ...]
# The reference builds adapters with an unused 3x3 conv of 384 channels, whatever the width.
UNUSED_CONV2D_CHANNELS = 384


@dataclasses.dataclass(frozen=True)
class Transform:
    to_torch: Callable[[Sequence[np.ndarray]], np.ndarray]
    to_flax: Callable[[np.ndarray], list[np.ndarray]]


def _identity() -> Transform:
    return Transform(lambda xs: xs[0], lambda t: [t])


def _linear() -> Transform:
    """Flax kernel [in, out] <-> torch Linear weight [out, in]."""
    return Transform(lambda xs: xs[0].T, lambda t: [t.T])


def _layer_axes_reversed() -> Transform:
    """Flax Conv1D kernel [k, in/groups, out] <-> torch Conv1d weight [out, in/groups, k]."""
    return Transform(lambda xs: xs[0].transpose(2, 1, 0), lambda t: [t.transpose(2, 1, 0)])


def _packed_qkv_weight(heads: int) -> Transform:
    """Three Flax [D, heads, head_dim] kernels <-> rows [q; k; v] of a [3D, D] weight."""
    def to_torch(xs):
        return np.concatenate([x.reshape(x.shape[0], -1).T for x in xs], axis=0)

    def to_flax(t):
        width = t.shape[1]
        return [part.T.reshape(width, heads, width // heads) for part in np.split(t, 3)]
    return Transform(to_torch, to_flax)


def _packed_qkv_bias(heads: int) -> Transform:
    def to_flax(t):
        return [part.reshape(heads, -1) for part in np.split(t, 3)]
    return Transform(lambda xs: np.concatenate([x.reshape(-1) for x in xs]), to_flax)


def _attention_out(heads: int) -> Transform:
    """Flax [heads, head_dim, D] <-> torch [D, heads*head_dim]."""
    def to_flax(t):
        return [t.T.reshape(heads, -1, t.shape[0])]
    return Transform(lambda xs: xs[0].reshape(-1, xs[0].shape[-1]).T, to_flax)


@dataclasses.dataclass(frozen=True)
class Entry:
    torch_key: str
    flax_paths: tuple[FlaxPath, ...]
    transform: Transform


def _path(text: str) -> FlaxPath:
    return tuple(text.split('/'))


def _block_entries(torch_prefix: str, flax_prefix: str, heads: int, qkv_name: str,
                   fc_names: tuple[str, str]) -> list[Entry]:
    attn = f'{flax_prefix}/attn'
    qkv_weight, qkv_bias = (('Wqkv.weight', 'Wqkv.bias') if qkv_name == 'Wqkv'
                            else ('in_proj_weight', 'in_proj_bias'))
    fc1, fc2 = fc_names
    entries = [
        Entry(f'{torch_prefix}attn.{qkv_weight}',
              tuple(_path(f'{attn}/{n}/kernel') for n in ('query', 'key', 'value')),
              _packed_qkv_weight(heads)),
        Entry(f'{torch_prefix}attn.{qkv_bias}',
              tuple(_path(f'{attn}/{n}/bias') for n in ('query', 'key', 'value')),
              _packed_qkv_bias(heads)),
        Entry(f'{torch_prefix}attn.out_proj.weight', (_path(f'{attn}/out/kernel'),),
              _attention_out(heads)),
        Entry(f'{torch_prefix}attn.out_proj.bias', (_path(f'{attn}/out/bias'),), _identity()),
        Entry(f'{torch_prefix}mlp.{fc1}.weight', (_path(f'{flax_prefix}/mlp/fc1/kernel'),),
              _linear()),
        Entry(f'{torch_prefix}mlp.{fc1}.bias', (_path(f'{flax_prefix}/mlp/fc1/bias'),),
              _identity()),
        Entry(f'{torch_prefix}mlp.{fc2}.weight', (_path(f'{flax_prefix}/mlp/fc2/kernel'),),
              _linear()),
        Entry(f'{torch_prefix}mlp.{fc2}.bias', (_path(f'{flax_prefix}/mlp/fc2/bias'),),
              _identity()),
    ]
    entries += _layer_norm_entries(torch_prefix + 'ln_1', f'{flax_prefix}/ln_1')
    entries += _layer_norm_entries(torch_prefix + 'ln_2', f'{flax_prefix}/ln_2')
    return entries


def _layer_norm_entries(torch_name: str, flax_name: str) -> list[Entry]:
    return [Entry(f'{torch_name}.weight', (_path(f'{flax_name}/scale'),), _identity()),
            Entry(f'{torch_name}.bias', (_path(f'{flax_name}/bias'),), _identity())]


def _adapter_entries(torch_prefix: str, flax_prefix: str) -> list[Entry]:
    entries = []
    for layer, transform in (('down_proj', _linear()), ('up_proj', _linear()),
                             ('dwconv', _layer_axes_reversed()),
                             ('conv', _layer_axes_reversed())):
        entries.append(Entry(f'{torch_prefix}{layer}.weight',
                             (_path(f'{flax_prefix}/{layer}/kernel'),), transform))
        entries.append(Entry(f'{torch_prefix}{layer}.bias',
                             (_path(f'{flax_prefix}/{layer}/bias'),), _identity()))
    entries.append(Entry(f'{torch_prefix}gamma', (_path(f'{flax_prefix}/gamma'),), _identity()))
    return entries


def reference_entries(config: EgoVideoConfig) -> list[Entry]:
    """Every reference key that corresponds to a Flax parameter, in reference order."""
    vision, text = config.vision, config.text
    entries = [Entry('logit_scale', (('logit_scale',),), _identity())]
    if config.mode == 'slowfast':
        entries.append(Entry('slowfast_projection', (('slowfast_projection',),), _identity()))
    for name in ('class_embedding', 'positional_embedding', 'temporal_embedding',
                 'image_projection'):
        entries.append(Entry(f'visual.{name}', (('visual', name),), _identity()))
    entries.append(Entry('visual.conv1.weight', (('visual', 'conv1', 'kernel'),), _linear()))
    entries += _layer_norm_entries('visual.ln_pre', 'visual/ln_pre')
    entries += _layer_norm_entries('visual.ln_post', 'visual/ln_post')
    for i in range(vision.layers):
        prefix = f'visual.transformer.resblocks.{i}.'
        entries += _block_entries(prefix, f'visual/blocks_{i}', vision.heads, 'Wqkv',
                                  ('fc1', 'fc2'))
        if config.mode == 'slowfast':
            entries += _adapter_entries(prefix + 'adapter.', f'visual/blocks_{i}/adapter')
    entries.append(Entry('textual.token_embedding.weight',
                         (('textual', 'token_embedding', 'embedding'),), _identity()))
    for name in ('positional_embedding', 'text_projection'):
        entries.append(Entry(f'textual.{name}', (('textual', name),), _identity()))
    entries += _layer_norm_entries('textual.ln_final', 'textual/ln_final')
    for i in range(text.layers):
        entries += _block_entries(f'textual.transformer.resblocks.{i}.', f'textual/blocks_{i}',
                                  text.heads, 'in_proj', ('c_fc', 'c_proj'))
    return entries


def unused_reference_shapes(config: EgoVideoConfig) -> dict[str, tuple[int, ...]]:
    """Keys the reference constructs but never uses in its forward pass (exported as zeros):
    the second adapter `adapter_2.*` and each adapter's `conv2d`."""
    if config.mode != 'slowfast':
        return {}
    width = config.vision.width
    hidden = int(width * config.adapter_ratio)
    channels = UNUSED_CONV2D_CHANNELS
    adapter_shapes = {
        'down_proj.weight': (hidden, width), 'down_proj.bias': (hidden,),
        'up_proj.weight': (width, hidden), 'up_proj.bias': (width,),
        'dwconv.weight': (hidden, 1, 3), 'dwconv.bias': (hidden,),
        'conv.weight': (hidden, hidden, 1), 'conv.bias': (hidden,), 'gamma': (1,),
    }
    conv2d_shapes = {'conv2d.weight': (channels, channels, 3, 3), 'conv2d.bias': (channels,)}
    shapes = {}
    for i in range(config.vision.layers):
        prefix = f'visual.transformer.resblocks.{i}.'
        shapes.update({f'{prefix}adapter.{k}': v for k, v in conv2d_shapes.items()})
        shapes.update({f'{prefix}adapter_2.{k}': v
                       for k, v in {**adapter_shapes, **conv2d_shapes}.items()})
    return shapes


# Alternative spellings accepted on import, rewritten to the reference names above.
_VISION_ALIASES = (('.attn.in_proj_weight', '.attn.Wqkv.weight'),
                   ('.attn.in_proj_bias', '.attn.Wqkv.bias'),
                   ('.mlp.c_fc.', '.mlp.fc1.'), ('.mlp.c_proj.', '.mlp.fc2.'))
_TEXT_ALIASES = tuple((new, old) for old, new in _VISION_ALIASES)
_OPENAI_TOP_LEVEL_TEXT = re.compile(
    r'^(token_embedding\.|positional_embedding$|transformer\.|ln_final\.|text_projection$)')


def is_openai_clip(state: dict[str, np.ndarray]) -> bool:
    return 'visual.proj' in state or 'token_embedding.weight' in state


def canonicalize(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rewrites any accepted spelling into reference keys: strips `module.`, maps OpenAI CLIP
    names (`visual.proj`, top-level text keys) and either attention / MLP naming, and turns a
    conv-form patch embedding `[D, 3, p, p]` into the linear form `[D, 3*p*p]`."""
    openai = is_openai_clip({k.removeprefix('module.'): v for k, v in state.items()})
    out = {}
    for key, value in state.items():
        key = key.removeprefix('module.')
        if openai:
            if key == 'visual.proj':
                key = 'visual.image_projection'
            elif _OPENAI_TOP_LEVEL_TEXT.match(key):
                key = 'textual.' + key
        aliases = _VISION_ALIASES if key.startswith('visual.') else _TEXT_ALIASES
        for old, new in aliases:
            key = key.replace(old, new)
        if key == 'visual.conv1.weight' and value.ndim == 4:
            value = value.reshape(value.shape[0], -1)
        if key in out:
            raise ValueError(f'two keys of the checkpoint map to {key!r}')
        out[key] = value
    return out

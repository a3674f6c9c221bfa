"""The layer rule of docs/architecture.md, checked on the source: every import of an
`egovideo_jax` module (at module level or inside a function) goes down the layers or stays in
its own package, and no two modules import each other, however indirectly."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / 'egovideo_jax'

# Bottom to top. A package may import its own modules and packages of lower layers only.
LAYERS = (
    ('io', 'media', 'parallel'),        # files, video decoding and frames, device mesh
    ('records', 'model'),               # the record format; the Flax networks
    ('input', 'hod', 'convert'),        # records -> batches; videos -> HOD records; weights
    ('evaluate',),                      # benchmarks over a model
    ('train',),                         # the trainer (runs evaluators)
    ('api',),                           # the public API: load, embed, export
    ('demo', 'embed', 'probe'),         # the demo; the embedding and probe tools (command lines)
)
LAYER_OF = {package: level for level, packages in enumerate(LAYERS) for package in packages}
TOP = len(LAYERS) - 1


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imported_modules(path: Path) -> set[str]:
    """Every egovideo_jax module `path` imports (`from a import b` counts `a.b` when b is a
    module, else `a`)."""
    name = module_name(path)
    is_package = path.name == '__init__.py'
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parent = name.split('.')[:len(name.split('.')) - node.level + is_package]
                base = '.'.join(parent + ([base] if base else []))
            for alias in node.names:
                candidate = f'{base}.{alias.name}'
                found.add(candidate if candidate in ALL_MODULES else base)
    return {module for module in found if module.startswith('egovideo_jax.')}


ALL_MODULES = {module_name(path) for path in PACKAGE.rglob('*.py')}
SOURCES = sorted(PACKAGE.rglob('*.py'))


def package_of(module: str) -> str:
    return module.split('.')[1]


def layer_of(module: str) -> int:
    if module.endswith('.__main__'):
        return TOP  # command lines sit on top whatever package they live in
    package = package_of(module)
    assert package in LAYER_OF, (f'{module}: package {package!r} has no layer; add it to '
                                 'LAYERS here and to docs/architecture.md')
    return LAYER_OF[package]


def test_every_package_has_a_layer():
    packages = {package_of(module) for module in ALL_MODULES if module != 'egovideo_jax'}
    assert packages == set(LAYER_OF), sorted(packages ^ set(LAYER_OF))


def test_imports_follow_the_layers():
    violations = []
    for path in SOURCES:
        importer = module_name(path)
        if importer == 'egovideo_jax':
            continue
        for imported in sorted(imported_modules(path)):
            if imported == 'egovideo_jax' or package_of(imported) == package_of(importer):
                continue
            if layer_of(imported) >= layer_of(importer) and not importer.endswith('.__main__'):
                violations.append(f'{importer} (layer {layer_of(importer)}) imports '
                                  f'{imported} (layer {layer_of(imported)})')
    assert not violations, '\n'.join(violations)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the cycles (components of more than one module)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, ()):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_no_import_cycles():
    graph = {module_name(path): imported_modules(path) - {module_name(path)}
             for path in SOURCES}
    assert strongly_connected(graph) == []


def test_cycle_detection_finds_a_cycle():
    assert strongly_connected({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [
        ['a', 'b', 'c']]


@pytest.mark.parametrize('config, arg', [('cotrain', 'b16'), ('cotrain', 'demo'),
                                         ('eval', 'all'), ('hod', 'demo')])
def test_configs_build_without_jax(config, arg):
    """A config is a ConfigDict: building one imports neither JAX nor the input pipeline,
    the demo renderer or PyTorch."""
    heavy = ('jax', 'flax', 'grain', 'torch', 'egovideo_jax.demo', 'egovideo_jax.input')
    code = (f'import sys; sys.path.insert(0, {str(REPO)!r}); import configs.{config} as c; '
            f'c.get_config({arg!r}); '
            f'print([m for m in {heavy!r} if m in sys.modules])')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '[]'

"""What the benchmark JSON files record about the machine they ran on, and how they are written."""
from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path


def machine(packages: tuple[str, ...] = ()) -> dict:
    """CPU count and model, platform, Python, and the installed versions of `packages`
    (distribution names, e.g. 'jax', 'av', 'pillow'; missing ones are left out)."""
    info = {'cpu_count': os.cpu_count(), 'platform': platform.platform(),
            'machine': platform.machine(), 'python': platform.python_version()}
    try:
        info['affinity_cpus'] = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        pass
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as file:
            names = [line.split(':', 1)[1].strip() for line in file
                     if line.startswith('model name')]
        if names:
            info['cpu_model'] = names[0]
    except OSError:
        pass
    versions = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    info['versions'] = versions
    return info


def write_results(path: str | os.PathLike, report: dict) -> None:
    """`report` as JSON at `path` (its directory created), atomically; says where."""
    from egovideo_jax.io.atomic import write_json_atomically

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, report)
    print(f'wrote {path}')

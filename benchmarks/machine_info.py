"""What the benchmark JSON files record about the machine they ran on."""
from __future__ import annotations

import importlib.metadata
import os
import platform


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

"""The run report of the HOD pipeline: skips, counts per stage, narrator sources, throughput;
as `report.json` and as the summary table printed at the end of a run.

Stages run in the order of `STAGES`; a clip skipped in one stage enters no later one, so the
counts follow from the number of rows, the clips an earlier run already finished (`resumed`:
they skip every stage but `records`) and the skips of each stage.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import time
from collections.abc import Iterable

from egovideo_jax.io.atomic import write_json_atomically

STAGES = ('clips', 'ego_filter', 'frames', 'detections', 'tracks', 'narration', 'records')
REPORT_NAME = 'report.json'
_LISTED_SKIPS = 10  # the summary table names this many skipped clips; report.json has all


@dataclasses.dataclass(frozen=True)
class Skip:
    """A clip (or a table row that is not one) left out, and why."""
    line: int  # in the input table
    clip: str  # the clip id, or 'line N' for a row that does not name a clip
    stage: str
    reason: str
    detail: str

    def message(self) -> str:
        return f'{self.clip}: {self.reason}: {self.detail}'


@dataclasses.dataclass
class RunReport:
    runner: str
    rows: int
    resumed: int
    stages: dict[str, dict[str, int]]  # stage -> {'in', 'out', 'skipped'}
    skips: list[Skip]
    narrator: dict  # name, model, primary, fallback, from_cache (over the written clips)
    clips_written: int
    seconds: float
    clips_per_second: float  # clips that went through the stages in this run, per second
    outputs: dict[str, str]
    ego_filter: dict | None = None  # ego_filter.py: probe, threshold, kept / dropped counts

    def skip_counts(self) -> dict[str, int]:
        return dict(collections.Counter(skip.reason for skip in self.skips).most_common())

    def to_json(self) -> dict:
        report = dataclasses.asdict(self)
        report['skip_counts'] = self.skip_counts()
        return report

    @classmethod
    def from_json(cls, data: dict) -> RunReport:
        fields = {field.name for field in dataclasses.fields(cls)}
        report = cls(**{key: value for key, value in data.items() if key in fields})
        report.skips = [Skip(**skip) for skip in report.skips]
        return report

    def summary(self) -> str:
        lines = [f'HOD pipeline ({self.runner}): {self.rows} rows -> {self.clips_written} clips '
                 f'written, {len(self.skips)} skipped'
                 + (f', {self.resumed} finished by an earlier run' if self.resumed else ''),
                 f'  {"stage":<12}{"in":>8}{"out":>8}{"skipped":>9}']
        for stage in STAGES:
            if stage == 'ego_filter' and self.ego_filter is None:
                continue  # no filter in this run
            counts = self.stages[stage]
            lines.append(f'  {stage:<12}{counts["in"]:>8}{counts["out"]:>8}'
                         f'{counts["skipped"]:>9}')
        if self.ego_filter is not None:
            found = self.ego_filter
            lines.append(f'  ego filter: P({found["positive"]}) >= {found["threshold"]} '
                         f'({found["probe"]}): {found["kept"]} kept, {found["dropped"]} '
                         f'dropped; scores in {found["scores_csv"]}')
        narrator = self.narrator
        lines.append(f'  narrator {narrator["name"]} ({narrator["model"]}): '
                     f'{narrator["primary"]} primary, {narrator["fallback"]} fallback, '
                     f'{narrator["from_cache"]} from the cache')
        if self.skips:
            lines.append('  skipped: ' + ', '.join(f'{reason} {count}' for reason, count
                                                   in self.skip_counts().items()))
            lines.extend(f'    {skip.message()}' for skip in self.skips[:_LISTED_SKIPS])
            if len(self.skips) > _LISTED_SKIPS:
                lines.append(f'    ... {len(self.skips) - _LISTED_SKIPS} more in report.json')
        lines.append(f'  throughput: {self.clips_per_second:.2f} clips/s '
                     f'({self.seconds:.1f} s)')
        lines.extend(f'  {name}: {path}' for name, path in self.outputs.items())
        return '\n'.join(lines)


def stage_counts(rows: int, resumed: int, skips: Iterable[Skip]) -> dict[str, dict[str, int]]:
    skipped = collections.Counter(skip.stage for skip in skips)
    unknown = set(skipped) - set(STAGES)
    if unknown:
        raise ValueError(f'skips name unknown stages {sorted(unknown)}; expected {STAGES}')
    counts, entering = {}, rows
    for stage in STAGES:
        if stage == 'frames':
            entering -= resumed  # finished clips skip straight to the records
        elif stage == 'records':
            entering += resumed
        counts[stage] = {'in': entering, 'out': entering - skipped[stage],
                         'skipped': skipped[stage]}
        entering -= skipped[stage]
    return counts


def narrator_counts(name: str, model: str,
                    sources: collections.Counter[tuple[str, bool]]) -> dict:
    """Where the narrations of the written clips came from: `sources` counts the clips by
    (`narration_source`, `from_cache`) of their `cache.FinishedClip`."""
    counts = {'name': name, 'model': model, 'primary': 0, 'fallback': 0, 'from_cache': 0}
    for (source, from_cache), count in sources.items():
        counts[source] += count
        counts['from_cache'] += count if from_cache else 0
    return counts


def build_run_report(runner: str, *, rows: int, resumed: int, skips: Iterable[Skip], narrator,
                     sources: collections.Counter[tuple[str, bool]], processed: int,
                     started: float, outputs: dict[str, str],
                     ego_filter: dict | None = None) -> RunReport:
    """The report of a finished run, from either runner: `narrator` has the `name` and `model`,
    `sources` counts the written clips as `narrator_counts` takes them, `processed` is the
    clips that went through the stages in this run and `started` its `time.monotonic()`."""
    skips = sorted(skips, key=lambda skip: skip.line)
    seconds = time.monotonic() - started
    return RunReport(
        runner=runner, rows=rows, resumed=resumed, stages=stage_counts(rows, resumed, skips),
        skips=skips, narrator=narrator_counts(narrator.name, narrator.model, sources),
        clips_written=sum(sources.values()), seconds=round(seconds, 3),
        clips_per_second=round(processed / seconds, 3) if seconds > 0 else 0.0,
        outputs=outputs, ego_filter=ego_filter)


def write_report(directory: str | os.PathLike, report: RunReport) -> str:
    path = os.path.join(os.fspath(directory), REPORT_NAME)
    write_json_atomically(path, report.to_json(), indent=2)
    return path


def read_report(directory: str | os.PathLike) -> RunReport:
    with open(os.path.join(os.fspath(directory), REPORT_NAME), encoding='utf-8') as file:
        return RunReport.from_json(json.load(file))

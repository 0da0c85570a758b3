"""How long a plan will take: a fixed start, its work, and the speed earlier studies
measured here.

Work is counted in weight-rows: each run trains its model's weights on every training row
for every epoch (forward and backward, ×3) and evaluates it on both splits. Tiny models
cost more per weight-row than large ones (per-step overheads dominate), so speeds are kept
per executor and per model size (powers of two of the weight count), and a plan is timed
with the speed measured on the nearest size. Without any measurement the estimate uses
`FIRST_GUESS`, and says so. Speeds live in `speed.json` beside the compile cache: they
belong to the machine, not to a results folder.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

FIRST_GUESS = 2.4e9  # weight-rows per second: the tutorial's study on a 2-core machine (bench/RESULTS.md)
FIXED_SECONDS = 2.0  # a study's cost before its first epoch (starting JAX, tracing, loading compiled
# programs), measured with the demo on a 2-core machine: not part of a speed
SPEED_FILE = "speed.json"
LONG_STUDY_SECONDS = 3600  # a study estimated longer asks before it starts (from a terminal)
DECAY = 0.5  # the weight of the studies timed before, at each new one
MIN_MEASURED_SECONDS = 1.0  # a study whose training (beyond the fixed cost) was shorter: not a speed


@dataclass(frozen=True)
class Duration:
    seconds: float
    measured: bool  # False: no study has been timed with this executor here yet
    same_size: bool = True  # False: timed only on models of another size (the nearest one's speed)

    def describe(self) -> str:
        text = f"about {format_seconds(self.seconds)}"
        if not self.measured:
            return text + " (first guess)"
        return text if self.same_size else text + " (timed on models of another size)"


def work(plans: list, fraction: float = 1.0) -> tuple[float, int]:
    """The weight-rows of `plans` (a study's plan, or a sweep's; times `fraction`, the share of
    their runs still to train) and the mean weight count of their models."""
    total = models = weights = 0.0
    for plan, direction in ((plan, direction) for plan in plans for direction in plan.directions):
        groups = []
        if direction.trains_sources:
            groups.append((plan.source_repeats, direction.source_recipe.arch, direction.source_task))
        for strategy in direction.strategies:
            runs = plan.repeats * (plan.source_repeats if strategy.uses_source else 1)
            groups.append((runs, direction.recipes[strategy.label].arch, direction.target_task))
        for runs, arch, task in groups:
            size = arch.n_weights()
            rows = 3 * len(task.x_train) + len(task.x_test)  # a step's forward and backward; evaluation
            total += runs * plan.training.epochs * rows * size
            models, weights = models + runs, weights + runs * size
    return total * fraction, int(weights / max(models, 1))


def estimate_duration(plans: list, executor_key: str, fraction: float = 1.0, cache: Path | None = None) -> Duration:
    units, size = work(plans, fraction)
    speeds = _speeds(_read(cache), executor_key)
    rate = _nearest_rate(speeds, size)
    return Duration(FIXED_SECONDS + units / (rate or FIRST_GUESS), rate is not None, _bucket(size) in speeds)


def measured_rate(executor_key: str, size: int, cache: Path | None = None) -> float | None:
    """Weight-rows per second measured with this executor on the nearest model size, or None."""
    return _nearest_rate(_speeds(_read(cache), executor_key), size)


def _nearest_rate(speeds: dict[int, tuple[float, float]], size: int) -> float | None:
    if not speeds:
        return None
    units, seconds = speeds[min(speeds, key=lambda bucket: abs(bucket - _bucket(size)))]
    return units / seconds


def record_rate(executor_key: str, plans: list, fraction: float, seconds: float, cache: Path | None = None) -> None:
    """Remember the speed of a study (or sweep) that just trained the share `fraction` of the
    runs of `plans` in `seconds`: per size bucket, the work and the seconds of the studies
    timed so far, the older ones weighing half at each new study, so long studies (whose
    speed is the one that matters) dominate and the file follows a machine that changes.
    Quietly does nothing where the cache cannot be written."""
    path = _path(cache)
    seconds -= FIXED_SECONDS
    if path is None or seconds < MIN_MEASURED_SECONDS or fraction <= 0:
        return
    units, size = work(plans, fraction)
    speeds = _read(cache)
    kept = {str(bucket): list(entry) for bucket, entry in _speeds(speeds, executor_key).items()}
    before = kept.get(str(_bucket(size)), [0.0, 0.0])
    kept[str(_bucket(size))] = [DECAY * before[0] + units, DECAY * before[1] + seconds]
    speeds[executor_key] = kept
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(speeds, indent=1, sort_keys=True))
        os.replace(temporary, path)
    except OSError:
        return


def format_seconds(seconds: float) -> str:
    """`40 s`, `12 min`, `3 h 10 min`: rounded as an estimate should be."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h" + (f" {minutes} min" if minutes else "")


def _bucket(size: int) -> int:
    return round(math.log2(max(size, 1)))


def _speeds(speeds: dict, executor_key: str) -> dict[int, tuple[float, float]]:
    """An executor's `(work, seconds)` by size bucket (a bare number is a speed: one second's
    work); entries a damaged file garbled are left out."""
    kept = {}
    entries = speeds.get(executor_key)
    for bucket, entry in (entries.items() if isinstance(entries, dict) else ()):
        try:
            units, seconds = (entry, 1.0) if isinstance(entry, (int, float)) else entry
            bucket, units, seconds = int(bucket), float(units), float(seconds)
        except (TypeError, ValueError):
            continue
        if all(math.isfinite(value) and value > 0 for value in (units, seconds)):
            kept[bucket] = (units, seconds)
    return kept


def _path(cache: Path | None) -> Path | None:
    if cache is None:
        from transferlab._backend import cache_dir

        cache = cache_dir()
    return None if cache is None else Path(cache) / SPEED_FILE


def _read(cache: Path | None) -> dict:
    path = _path(cache)
    try:
        speeds = json.loads(path.read_text()) if path is not None else {}
    except (OSError, ValueError):
        return {}
    return speeds if isinstance(speeds, dict) else {}

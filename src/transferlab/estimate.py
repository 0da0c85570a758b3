"""How much work a plan is, and how much memory training it will take, before it starts.

The estimate is deliberately simple and errs high: the process's fixed cost (JAX, Keras,
compiled programs), the planned runs while they are written to the database, the task
data, and the largest shard in flight (its row orders, curves and weights, with the
engine's copies). `transferlab run` prints it and refuses to start a study whose estimate
exceeds the memory the machine has available (`--force` overrides).
"""

from __future__ import annotations

from dataclasses import dataclass


from transferlab import engine
from transferlab.words import count

BASELINE_BYTES = 900 * 2**20  # measured: JAX, Keras and a compiled engine program, idle
PLANNED_RUN_BYTES = 4096  # one planned run on its way into the database (JSON of its recipe)
CURVES_PER_RUN = 8
METRIC_ROW_BYTES = 120  # one (run, split, epoch, name, value) row on its way into SQLite
DEFAULT_SHARD_CEILING = 1024  # a chosen shard stays at or below this: an interruption loses one shard
DEFAULT_BUDGET_SHARE = 0.5  # without [execution] memory: half of what is available
UNKNOWN_AVAILABLE_BYTES = 4 * 2**30


@dataclass(frozen=True)
class Estimate:
    runs: int
    model_epochs: int
    peak_bytes: int

    def describe(self, available: int | None) -> str:
        return f"{count(self.runs, 'run')}, {count(self.model_epochs, 'model-epoch')}; {self.memory(available)}"

    def memory(self, available: int | None) -> str:
        """`peak memory 1.1 of 22.9 GiB`: the estimate, and what the machine has available."""
        if not available:
            return f"peak memory {_gib(self.peak_bytes)}"
        peak, free = _gib(self.peak_bytes), _gib(available)
        if peak.split()[1] == free.split()[1]:
            peak = peak.split()[0]  # one unit for both
        return f"peak memory {peak} of {free}"


def estimate(plan, shard_size: int, runs: int | None = None, devices: int | None = None) -> Estimate:
    """The plan's work (all planned runs, or `runs` still to train) and peak memory with
    shards of `shard_size` runs: the process, the planned runs, the task data, and one
    shard in flight (its weights and curves on the host and on their way to SQLite, and
    per device the blocks in training: row orders of two epoch chunks, activations)."""
    import jax

    devices = devices or len(jax.local_devices())
    counts = plan.count_runs()
    total = counts["source"] + counts["target"]
    pending = total if runs is None else runs
    epochs = plan.training.epochs
    data = weights = device_bytes = 0
    for direction in plan.directions:
        tasks = [direction.source_task] if direction.source_spec is not None else []
        tasks.append(direction.target_task)
        for task in tasks:
            rows = len(task.x_train) + len(task.x_test)
            data = max(data, rows * (task.n_features + task.n_outputs) * 8 * 3)  # float64 as read, float32 copies
        n_train = max(len(task.x_train) for task in tasks)
        for recipe in list(direction.recipes.values()) + [direction.source_recipe]:
            arch = recipe.arch
            model_weights = arch.n_weights()
            weights = max(weights, model_weights)
            plan_ = engine.layer_plan(arch.layers)
            block = engine.models_per_block(plan_, arch.n_inputs)
            chunk = engine.epoch_chunk(epochs, n_train, block)
            orders = 2 * block * chunk * n_train * 4
            evaluation = engine.evaluation_rows(plan_, arch.n_inputs, block) * max(arch.sizes) * block * 4 * 6
            batch = block * plan.training.batch_size * _activations(arch) * 4 * 4
            slots = block * model_weights * 4 * 8  # weights, gradients, optimizer state, copies
            device_bytes = max(device_bytes, 2 * (orders + evaluation + batch + slots))
    shard = min(shard_size, max(pending, 1))
    curves = shard * epochs * CURVES_PER_RUN * (4 * 3 + METRIC_ROW_BYTES)  # engine copies + rows to SQLite
    params = shard * weights * 4 * 4  # initial and trained weights on the host, with copies
    peak = BASELINE_BYTES + total * PLANNED_RUN_BYTES + data + curves + params + devices * device_bytes
    return Estimate(pending, pending * epochs, int(peak))


def _activations(arch) -> int:
    """Values one row leaves for the backward pass: every layer's output, feature maps
    counted whole (a flat model's bound: its widest layer, per layer)."""
    if len(arch.input_shape) == 1 and all(len(shape) == 1 for shape in arch.layer_shapes):
        return max(arch.widths) * len(arch.layers)
    return sum(arch.sizes)


def budget_bytes(execution) -> int:
    """The memory a study may use: `[execution] memory`, else half of what is available."""
    given = execution.memory_bytes()
    if given is not None:
        return given
    available = available_memory()
    return int(DEFAULT_BUDGET_SHARE * (available or UNKNOWN_AVAILABLE_BYTES))


def shard_size_for(plan, execution, runs: int | None = None) -> int:
    """`[execution] shard_size` when given, else the largest power of two (up to
    `DEFAULT_SHARD_CEILING`) whose estimated peak fits the memory budget (at least 1)."""
    if execution.shard_size is not None:
        return execution.shard_size
    budget = budget_bytes(execution)
    chosen, size = 1, 1
    while size <= DEFAULT_SHARD_CEILING:
        if estimate(plan, size, runs).peak_bytes > budget:
            break
        chosen, size = size, size * 2
    return chosen


def available_memory() -> int | None:
    """Bytes the machine can still give this process (Linux `MemAvailable`), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**28 else f"{size / 2**20:.0f} MiB"

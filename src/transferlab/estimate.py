"""How much work a plan is, and how much memory training it will take, before it starts.

The estimate is deliberately simple and errs high: the process's fixed cost (JAX, Keras,
compiled programs), the planned runs while they are written to the database, the task
data, and the largest shard in flight (its row orders, curves and weights, with the
engine's copies). `transferlab run` prints it and refuses to start a study whose estimate
exceeds the memory the machine has available (`--force` overrides).
"""

from __future__ import annotations

from dataclasses import dataclass

from transferlab.engine import MODELS_PER_BLOCK

BASELINE_BYTES = 900 * 2**20  # measured: JAX, Keras and a compiled engine program, idle
PLANNED_RUN_BYTES = 4096  # one planned run on its way into the database (JSON of its recipe)
CURVES_PER_RUN = 8


@dataclass(frozen=True)
class Estimate:
    runs: int
    model_epochs: int
    peak_bytes: int

    def describe(self, available: int | None) -> str:
        text = f"{self.runs:,} runs, {self.model_epochs:,} model-epochs, estimated peak memory {_gib(self.peak_bytes)}"
        return text + (f" of {_gib(available)} available" if available else "")


def estimate(plan, shard_size: int, runs: int | None = None) -> Estimate:
    """The plan's work (all planned runs, or `runs` still to train) and peak memory."""
    counts = plan.count_runs()
    total = counts["source"] + counts["target"]
    pending = total if runs is None else runs
    epochs = plan.training.epochs
    data = weights = 0
    widest = 1
    for direction in plan.directions:
        for spec in (direction.source_spec, direction.target_spec):
            if spec is None:
                continue
            params = spec.params
            rows, features = params["n_samples"], params["n_features"]
            outputs = params.get("centers", params.get("n_targets", 1))
            data = max(data, rows * (features + outputs) * 8 * 3)  # float64 from scikit-learn, float32 copies
        for recipe in list(direction.recipes.values()) + [direction.source_recipe]:
            widest = max(widest, *recipe.arch.widths)
            weights = max(weights, sum(a * b + b for a, b in recipe.arch.shapes))
    n_train = max(
        spec.params["n_train"] for d in plan.directions for spec in (d.source_spec, d.target_spec) if spec is not None
    )
    shard = min(shard_size, max(pending, 1))
    slots = -(-shard // MODELS_PER_BLOCK) * MODELS_PER_BLOCK
    order_bytes = 2 if n_train < 2**15 else 4
    orders = shard * epochs * n_train * order_bytes + 4 * MODELS_PER_BLOCK * epochs * n_train * (order_bytes * 2 + 4)
    curves = slots * epochs * CURVES_PER_RUN * 4 * 3 + shard * epochs * 200  # engine copies + rows to SQLite
    params = slots * weights * 4 * 6  # initial, trained, gradients, velocity, copies
    activations = 4 * MODELS_PER_BLOCK * max(n_train, 1) * widest * 4 * 4
    peak = BASELINE_BYTES + total * PLANNED_RUN_BYTES + data + orders + curves + params + activations
    return Estimate(pending, pending * epochs, int(peak))


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

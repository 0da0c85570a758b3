"""Benchmark: how to run one convolution for many models at once on this machine.

The engine maps a model written for one model over the models of a block (`jax.vmap`).
A convolution then lowers three ways, each timed here as one SGD step (forward and
backward) of one convolution layer for MODELS models on a batch of 32 rows, as a first
layer (kernel gradient only) and as a later layer (the input's gradient too):

- `direct`: `lax.conv_general_dilated` under `vmap` (XLA makes it a grouped convolution);
- `patches`: `lax.conv_general_dilated_patches` times the kernel as a matrix (under `vmap`,
  a batched matrix product), with transferlab's backward pass (`kernels._patches_convolve`);
- `matrix`: the convolution's dense equivalent (input values × output values, the kernel's
  entries placed where they act) as one matrix (`kernels._matrix_convolve`);
- `loop`: `lax.map` over the models, one plain convolution each.

The entries of the dense equivalent are printed beside each layer: the engine takes
`matrix` up to `kernels.MATRIX_ENTRIES` of them and `patches` above.

The shapes are the layers of the examples' CNNs (the digits CNN, 8×8×1, and the 32×32×3
benchmark CNN). Results: bench/RESULTS.md, "Convolutions: which lowering".

    python bench/conv_lowering.py [--models 64] [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

SHAPES = {  # name: (input (h, w, c), kernel (kh, kw), filters, strides, padding)
    "shapes conv1: 16×16×1 → 8@3×3 same": ((16, 16, 1), (3, 3), 8, 1, "same"),
    "shapes conv2: 8×8×8 → 16@3×3 same": ((8, 8, 8), (3, 3), 16, 1, "same"),
    "digits conv1: 8×8×1 → 8@3×3": ((8, 8, 1), (3, 3), 8, 1, "valid"),
    "digits conv2: 6×6×8 → 16@3×3 same": ((6, 6, 8), (3, 3), 16, 1, "same"),
    "32×32×3 → 16@3×3 same": ((32, 32, 3), (3, 3), 16, 1, "same"),
    "16×16×16 → 32@3×3 same": ((16, 16, 16), (3, 3), 32, 1, "same"),
    "8×8×32 → 64@3×3 same": ((8, 8, 32), (3, 3), 64, 1, "same"),
    "16×16×16 → 32@3×3 stride 2": ((16, 16, 16), (3, 3), 32, 2, "same"),
}


LOWERINGS = ("direct", "patches", "matrix", "loop")


def _step(lowering: str, strides, padding: str, input_gradient: bool):
    """One SGD step's work for one layer: forward, kernel gradient and (for a layer after the
    first) the input's gradient, for every model."""
    import jax
    import jax.numpy as jnp

    from transferlab import kernels

    convolve = {"patches": kernels._patches_convolve, "matrix": kernels._matrix_convolve}.get(
        lowering, kernels._direct_convolve)

    def loss(kernel, x):
        return jnp.sum(jnp.square(jax.nn.relu(convolve(x, kernel, strides, padding, (1, 1)))))

    def one(kernel, x):
        if input_gradient:
            d_kernel, d_x = jax.grad(loss, argnums=(0, 1))(kernel, x)
            return kernel - 0.01 * d_kernel, x - 0.01 * d_x
        return kernel - 0.01 * jax.grad(loss)(kernel, x)

    if lowering == "loop":
        return jax.jit(lambda k, x: jax.lax.map(lambda pair: one(*pair), (k, x)))
    return jax.jit(jax.vmap(one))


def measure(models: int, repeats: int) -> dict:
    import jax
    import numpy as np

    rng = np.random.default_rng(0)
    table = {}
    for name, (shape, window, filters, stride, padding) in SHAPES.items():
        x = rng.standard_normal((models, 32) + shape).astype(np.float32)
        kernel = rng.standard_normal((models,) + window + (shape[-1], filters)).astype(np.float32) * 0.1
        for input_gradient in (False, True):
            row = {}
            for lowering in LOWERINGS:
                if lowering == "matrix" and _entries(name) > MATRIX_LIMIT:
                    row[lowering] = float("nan")  # its matrices would not fit in memory for all models
                    continue
                step = _step(lowering, (stride, stride), padding, input_gradient)
                jax.block_until_ready(step(kernel, x))
                start = time.perf_counter()
                for _ in range(repeats):
                    out = step(kernel, x)
                jax.block_until_ready(out)
                row[lowering] = (time.perf_counter() - start) / repeats * 1e3
            table[(name, "with input gradient" if input_gradient else "first layer")] = row
    return table


MATRIX_LIMIT = 1 << 22  # dense equivalents above this many entries are not timed (64 copies would not fit)


def _entries(name: str) -> int:
    from transferlab import kernels

    shape, window, filters, stride, padding = SHAPES[name]
    out = kernels._output_size(shape[:-1], window, (stride, stride), padding, (1, 1))
    return int(np.prod(shape)) * int(np.prod(out)) * filters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    table = measure(args.models, args.repeats)
    print(f"one SGD step of one convolution, {args.models} models, batch 32 (ms; lower is better)")
    print("| layer | dense entries | gradients | direct (grouped conv) | patches × matrix | dense matrix | "
          "loop over models | fastest |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for (name, kind), row in table.items():
        best = min((k for k in row if row[k] == row[k]), key=row.get)
        print(f"| {name} | {_entries(name):,} | {kind} | " + " | ".join(f"{row[k]:.2f}" for k in LOWERINGS)
              + f" | {best} |")


if __name__ == "__main__":
    main()

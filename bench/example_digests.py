"""Fingerprint of every shipped study: `Store.numbers_digest()` of the demo and of each
example in `examples/`, run from a cold process each.

    python bench/example_digests.py [--checkout DIR] [--only NAME ...]

A refactoring that promises to change no number (issue 21) must print the same digests
before and after; `--checkout` runs another checkout's code (e.g. a `git worktree` of the
commit before) and still computes the digests with this checkout's store reader.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def digest(folder: Path) -> str:
    from transferlab.store import Store

    with Store.in_folder(folder, readonly=True) as store:
        return store.numbers_digest()


def run(arguments: list[str], out: Path, checkout: str | None, cwd: Path) -> float:
    env = dict(os.environ, TRANSFERLAB_CACHE_DIR=str(out.parent / "cache"))
    if checkout:
        env["PYTHONPATH"] = str(Path(checkout, "src").resolve())
    started = time.perf_counter()
    extension = Path(cwd, Path(arguments[-1]).stem + ".py")  # an example's own strategies (shrink_perturb.py)
    first = ["--extension", str(extension)] if arguments[0] == "run" and extension.is_file() else []
    subprocess.run([sys.executable, "-m", "transferlab.cli", *first, *arguments, "--out", str(out), "--quiet"],
                   env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkout", help="another checkout whose code runs the studies")
    parser.add_argument("--only", nargs="*", help="example names (without .toml); 'demo' for the demo")
    args = parser.parse_args()
    examples = args.checkout and Path(args.checkout, "examples") or EXAMPLES
    names = ["demo"] + sorted(p.stem for p in examples.glob("*.toml"))
    if args.only:
        names = [name for name in names if name in args.only]
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            out = Path(scratch, name)
            arguments = ["demo"] if name == "demo" else ["run", str(examples / f"{name}.toml")]
            seconds = run(arguments, out, args.checkout, examples)
            print(f"{name:24s} {digest(out)}  ({seconds:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

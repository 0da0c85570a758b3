"""The `transferlab` command's entry point: make Ctrl-C safe first, then load the commands.

Kept tiny on purpose: nothing heavy (JAX, Keras, pandas) is imported before the interrupt
handler is in place, so Ctrl-C during start-up is one line too."""

from __future__ import annotations

import sys


def main() -> None:
    from transferlab import interrupts

    interrupts.install()
    from transferlab.commands import app

    app()


if __name__ == "__main__":
    sys.exit(main())

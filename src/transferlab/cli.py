"""The `transferlab` command's entry point: make Ctrl-C safe first, then load the commands.

Kept tiny on purpose: nothing heavy (JAX, Keras, pandas) is imported before the interrupt
handler is in place, so Ctrl-C during start-up is one line too."""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    from transferlab import interrupts

    interrupts.install()
    from transferlab.commands import app

    try:
        app()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    # The command is finished: a Ctrl-C now must neither report an interruption nor, during
    # the interpreter's shutdown (when Python restores the default handler), kill it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()

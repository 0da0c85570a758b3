"""The `transferlab` command's entry point: make Ctrl-C safe first, then load the commands.

Kept tiny on purpose: nothing heavy (JAX, Keras, pandas) is imported before the interrupt
handler is in place, so Ctrl-C during start-up is one line too."""

from __future__ import annotations

import os
import signal
import sys


EXTENSION_FLAGS = ("--extension", "-x")


def extensions_first(argv: list[str]) -> list[str]:
    """`--extension FILE` may come anywhere (`transferlab run s.toml --extension mine.py`); the
    option belongs to the program, so it is moved before the command."""
    program, rest, moved = argv[:1], [], []
    index = 1
    while index < len(argv):
        arg = argv[index]
        if arg in EXTENSION_FLAGS and index + 1 < len(argv):
            moved += [arg, argv[index + 1]]
            index += 2
            continue
        if arg.startswith("--extension="):
            moved.append(arg)
        else:
            rest.append(arg)
        index += 1
    return program + moved + rest


def main() -> None:
    from transferlab import interrupts

    interrupts.install()
    sys.argv = extensions_first(sys.argv)
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

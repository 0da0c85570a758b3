"""Ctrl-C that always works: one line, exit code 130, within moments, at any point.

Python's default handler raises `KeyboardInterrupt` wherever the main thread happens to
be, which can be inside a callback that swallows it (an XLA garbage-collection hook), or
not at all until a long compiled computation returns. Instead the signal's C-level
handler wakes a watcher thread through a pipe (`signal.set_wakeup_fd`); the watcher prints
the current stage's message and ends the process with `os._exit(130)`. That is as safe
as `kill -9`, which transferlab is built to survive: shards are committed in SQLite
transactions, files are renamed into place, the folder lock dies with the process.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

EXIT_INTERRUPTED = 130
_state = {"message": "nothing was changed", "installed": False}


def set_message(message: str) -> None:
    """What the user is told if Ctrl-C comes now (what is saved, how to resume)."""
    _state["message"] = message


def install() -> None:
    """Route SIGINT to the watcher thread (call once, from the main thread, first thing)."""
    if _state["installed"]:
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    signal.signal(signal.SIGINT, lambda signum, frame: None)  # the watcher acts, not the main thread
    threading.Thread(target=_watch, args=(read_end,), name="transferlab-interrupt", daemon=True).start()
    _state["installed"] = True


def _watch(read_end: int) -> None:
    while True:
        received = os.read(read_end, 64)
        if signal.SIGINT in received:
            if sys.stderr.isatty():
                sys.stderr.write("\x1b[?25h\n")  # a progress bar may have hidden the cursor
            sys.stderr.write(f"interrupted: {_state['message']}\n")
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)

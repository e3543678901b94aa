"""Progress for work longer than a second: a spinner naming the phase, on a terminal only.

    with phase("compiling 1747 nodes for llvm"):
        exe = backends.compile(graph, "llvm")

Nothing is written when stdout or stderr is not a terminal (pipes, files, CI logs, tests) or when
GRAPHDSL_PROGRESS=0; GRAPHDSL_PROGRESS=1 forces it on. The spinner starts after ``after`` seconds,
so quick phases print nothing, and it erases its line when the phase ends.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager


def progress_enabled() -> bool:
    flag = os.environ.get("GRAPHDSL_PROGRESS")
    if flag in ("0", "1"):
        return flag == "1"
    return sys.stdout.isatty() and sys.stderr.isatty()


@contextmanager
def phase(desc: str, *, after: float = 1.0, enabled: bool | None = None):
    """A spinner with ``desc`` and the seconds elapsed on stderr while the block runs."""
    if not (progress_enabled() if enabled is None else enabled):
        yield
        return
    stop = threading.Event()
    start = time.perf_counter()
    stream = sys.stderr

    def spin():
        if stop.wait(after):
            return
        frames, i = "|/-\\", 0
        while True:
            stream.write(f"\r{frames[i % 4]} {desc} ({time.perf_counter() - start:.0f} s)\033[K")
            stream.flush()
            i += 1
            if stop.wait(0.2):
                break
        stream.write("\r\033[K")
        stream.flush()

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()

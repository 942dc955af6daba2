"""Signals: a canceled CI job gets SIGTERM (the runner signals the job's process group: gitlab-org/gitlab-runner
helpers/process/killer_unix.go, ``unixKiller.Terminate``; docs/gitlab-notes.md, 'Job cancellation signals'),
Ctrl-C gives SIGINT, a closed terminal SIGHUP.

Each raises in the main thread (SIGINT as ``KeyboardInterrupt``, the others as
:class:`~kfp_launch.errors.Interrupted`), every time: a first signal swallowed by user code (an
``except:`` around an import) must not leave the process uninterruptible. Cleanup that must finish
(terminating the run) runs inside :func:`deferred`, where the signals are ignored.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from kfp_launch.errors import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _raise(signum: int, _frame: FrameType | None) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(signum)


@contextmanager
def raising() -> Iterator[None]:
    """Install the raising handlers for the duration of a command, then restore the previous ones."""
    previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {
        s: signal.signal(s, _raise) for s in SIGNALS
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def deferred() -> Iterator[None]:
    """Ignore the signals while cleaning up (a second SIGTERM must not cut a terminate call short)."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

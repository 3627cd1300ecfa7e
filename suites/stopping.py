"""Stopping a run cleanly: which process handles the signals, and workers that never
outlive the run.

Only the driver (the process running ``executors.execute``) reacts to Ctrl-C and SIGTERM.
A terminal's Ctrl-C reaches the whole process group, workers included; a worker that took
it would stop mid-cell, perhaps halfway through a lazy import, and its next cell would then
fail for no reason of its own. So pool workers ignore SIGINT (``init_worker``), and the
driver, which gets it (and SIGTERM) as a ``KeyboardInterrupt`` (``stop_on_signals``),
kills them. From the first signal on, further ones are held back (``stop_on_signals``,
``signals_held``), so a second Ctrl-C cannot abandon the cleanup halfway. A worker dies with its parent (``die_with_parent``): a driver killed with
SIGKILL, which can clean up nothing, leaves no process behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

#: prctl's option that asks the kernel for a signal when the parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1
#: how often a worker without prctl checks that its parent is alive, in seconds.
_PARENT_POLL_S = 0.5


def in_main_thread() -> bool:
    """Whether signal handlers can be set here (Python allows it in the main thread only)."""
    return threading.current_thread() is threading.main_thread()


def die_with_parent(parent_pid: int) -> None:
    """Make this process end when ``parent_pid`` (its parent) does, however the parent ends.

    On Linux the kernel sends SIGKILL (``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon
    thread polls the parent's pid and exits this process when it changes. A parent already
    gone before the request took effect is caught by comparing the pids afterwards."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
        if armed:
            if os.getppid() != parent_pid:
                os._exit(1)
            return
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="watch-parent").start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(_PARENT_POLL_S)
    os._exit(1)  # no cleanup: the driver that would receive this worker's results is gone


def init_worker(parent_pid: int) -> None:
    """The part of a pool worker's initializer that concerns stopping: Ctrl-C is the
    driver's to handle, and the worker dies with the driver."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid)


#: the signals that stop a run.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: whether ``stop_on_signals`` keeps later signals held once a run has stopped (see ``hold_after_stop``).
_hold_after_stop = False


class Signalled(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread by ``stop_on_signals``'s handler: a
    ``KeyboardInterrupt``, so that SIGTERM stops a run along the same path as Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def hold_after_stop() -> None:
    """For a process that exits once its run has stopped (the CLI): after the first signal,
    keep the rest held until the process ends, instead of restoring the handlers when the
    run's cleanup is done. Otherwise the second Ctrl-C of an impatient user, landing just
    after the cleanup, would kill the interpreter while it joins its threads at exit."""
    global _hold_after_stop
    _hold_after_stop = True


def _still_stopping(signum: int, frame: object) -> None:
    sys.stderr.write(f"{signal.Signals(signum).name}: already stopping (the workers are being ended)\n")


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """For the block, SIGINT and SIGTERM raise ``Signalled`` in the main thread, once: the
    first one also switches both signals to a handler that only says the run is stopping,
    so that nothing can interrupt the stop itself (ending the workers). The handlers are
    restored on leaving the block, unless the run stopped and ``hold_after_stop`` was
    asked for. Does nothing outside the main thread."""
    if not in_main_thread():
        yield
        return
    stopped = False

    def first(signum: int, frame: object) -> None:
        nonlocal stopped
        stopped = True
        for s in STOP_SIGNALS:
            signal.signal(s, _still_stopping)
        raise Signalled(signum)

    saved = {s: signal.signal(s, first) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in saved.items():
            # SIG_IGN, not a Python handler, to hold them: the interpreter resets Python
            # handlers to the default while it finalizes, and a Ctrl-C then would kill it
            signal.signal(s, signal.SIG_IGN if stopped and _hold_after_stop else handler)


@contextlib.contextmanager
def signals_held(log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Ignore SIGINT and SIGTERM for the block (the driver's cleanup after the first one),
    saying so through ``log`` when one arrives; the handlers are restored afterwards. Does
    nothing outside the main thread."""
    if not in_main_thread():
        yield
        return

    def still_stopping(signum: int, frame: object) -> None:
        if log is not None:
            log(f"{signal.Signals(signum).name}: already stopping; the workers are being ended")

    saved = {s: signal.signal(s, still_stopping) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)

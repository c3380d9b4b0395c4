"""Ctrl-C as a request to stop, not an exception: for commands whose normal end is Ctrl-C
(``audit tail --follow``).

Python turns SIGINT into a ``KeyboardInterrupt`` raised wherever the main thread is when the handler
runs. When that is a weakref callback or a ``__del__`` run by the garbage collector (frequent while
modules import, as ``tail`` does when it opens the store), Python prints "Exception ignored" and goes
on: the Ctrl-C is lost and the follow never ends. Raised inside pydantic's schema building it turns
into a ``SchemaError`` (exit 1). So while ``StopOnCtrlC`` is active the first Ctrl-C only sets
``pressed`` and wakes ``wait`` (through the signal wakeup fd, so one arriving just before the wait
starts is not missed); the command ends at its next check. A second Ctrl-C raises
``KeyboardInterrupt`` as usual, to break out of a call that is stuck. A SIGINT the process was
started ignoring (``nohup``, a shell's background job) stays ignored.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from types import FrameType, TracebackType
from typing import Any


class StopOnCtrlC:
    """Within ``with``: Ctrl-C sets ``pressed``; a ``KeyboardInterrupt`` (a second Ctrl-C) ends the
    block quietly. ``enabled=False`` leaves Ctrl-C alone (``wait`` is a plain sleep)."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.pressed = False
        self._pipe: tuple[int, int] | None = None
        self._previous_handler: Any = None
        self._previous_fd = -1

    def __enter__(self) -> StopOnCtrlC:
        if not self.enabled or threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may set signal handlers
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            return self
        read, write = os.pipe()
        for fd in (read, write):
            os.set_blocking(fd, False)
        self._pipe = (read, write)
        self._previous_fd = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    def wait(self, seconds: float) -> bool:
        """Wait ``seconds``, less if Ctrl-C is pressed meanwhile; whether it has been pressed."""
        deadline = time.monotonic() + seconds
        while not self.pressed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self._pipe is None:
                time.sleep(left)
                break
            if select.select([self._pipe[0]], [], [], left)[0]:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._pipe[0], 512)
        return self.pressed

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if self._pipe is not None:
            previous = self._previous_handler
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
            signal.set_wakeup_fd(self._previous_fd)
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None
        return self.enabled and exc_type is not None and issubclass(exc_type, KeyboardInterrupt)

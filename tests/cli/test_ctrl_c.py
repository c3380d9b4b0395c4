"""``StopOnCtrlC``: within it Ctrl-C is a flag that wakes the wait, a second one breaks out, and
everything is given back after."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from mcp_gateway.cli.ctrl_c import StopOnCtrlC


def test_a_ctrl_c_sent_during_a_long_wait_ends_it_at_once_and_is_not_raised() -> None:
    with StopOnCtrlC() as ctrl_c:
        assert not ctrl_c.pressed
        started = time.monotonic()
        threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGINT)).start()
        assert ctrl_c.wait(60) is True
        assert time.monotonic() - started < 30 and ctrl_c.pressed
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.set_wakeup_fd(-1) == -1  # the wakeup fd is given back too


def test_a_second_ctrl_c_breaks_out_of_the_block_which_then_ends_quietly() -> None:
    reached = []
    with StopOnCtrlC() as ctrl_c:
        signal.raise_signal(signal.SIGINT)
        assert ctrl_c.pressed and ctrl_c.wait(0) is True
        signal.raise_signal(signal.SIGINT)  # a stuck call's way out
        reached.append(True)
    assert reached == [] and ctrl_c.pressed
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_the_process_was_started_ignoring_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopOnCtrlC() as ctrl_c:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)
            assert ctrl_c.wait(0.01) is False
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_disabled_it_leaves_ctrl_c_to_python_and_lets_other_errors_through() -> None:
    with pytest.raises(KeyboardInterrupt), StopOnCtrlC(enabled=False) as ctrl_c:
        signal.raise_signal(signal.SIGINT)
    assert not ctrl_c.pressed and ctrl_c.wait(0) is False
    with pytest.raises(ValueError, match="not ours"), StopOnCtrlC():
        raise ValueError("not ours")

"""The stderr window: a secret split across lines is scrubbed whole, with bounded memory and delay."""

from __future__ import annotations

import base64
import logging
import os
import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from conftest import wait_until
from mcp_gateway.connectors.mcp.stderr_window import StderrWindow
from mcp_gateway.connectors.mcp.stdio import stderr_pipe
from mcp_gateway.redact import Redactor
from mcp_gateway.types import SecretValue

noise_line = st.text(alphabet=string.ascii_letters + string.digits + " .:=-", max_size=60)


def _chunks(value: str, size: int = 6) -> set[str]:
    return {value[i : i + size] for i in range(len(value) - size + 1)}


def _run(window: StderrWindow, feeds: list[str]) -> list[str]:
    out: list[str] = []
    for text in feeds:
        out += window.feed(text)
    return out + window.flush()


@given(
    secret=st.text(alphabet=string.ascii_letters + string.digits + "+/=_-.!", min_size=6, max_size=300),
    data=st.data(),
    before=st.lists(noise_line, max_size=150),
    after=st.lists(noise_line, max_size=150),
    indent=st.sampled_from(["", "  ", "\t"]),
)
def test_a_secret_split_across_lines_anywhere_leaves_no_piece_in_the_log(
    secret: str, data: st.DataObject, before: list[str], after: list[str], indent: str
) -> None:
    redactor = Redactor.from_secrets([SecretValue("k", secret.encode())])
    assume(not redactor.find("\n".join(before + after), join_lines=True))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(secret) - 1), max_size=min(20, len(secret) - 1))))
    pieces = [secret[a:b] for a, b in zip([0, *cuts], [*cuts, len(secret)], strict=True)]
    text = "\n".join([*before, "key: " + f"\n{indent}".join(pieces) + " end", *after]) + "\n"
    # The pipe delivers the text in arbitrary chunks.
    points = sorted(data.draw(st.sets(st.integers(1, len(text) - 1), max_size=10)))
    feeds = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    window = StderrWindow(lambda: redactor, hold_lines=32, hold_chars=2048)
    logged = _run(window, feeds)
    assert len(logged) == text.count("\n")
    noise = "\n".join(before + after)
    log = "\n".join(logged)
    assert "[REDACTED:k]" in log
    assert {chunk for chunk in _chunks(secret) if chunk in log and chunk not in noise} == set()
    # The lines around it are logged as they were.
    assert logged[: len(before)] == [line + "\n" for line in before]


def test_a_pem_key_written_line_by_line_is_logged_without_any_piece_of_it() -> None:
    body = base64.b64encode(os.urandom(1200)).decode()
    pem = "-----BEGIN PRIVATE KEY-----\n"
    pem += "".join(body[i : i + 64] + "\n" for i in range(0, len(body), 64))
    pem += "-----END PRIVATE KEY-----\n"
    redactor = Redactor.from_secrets([SecretValue("pem", pem.encode())])
    window = StderrWindow(lambda: redactor)
    logged = _run(window, ["starting\nkey loaded from env:\n", *pem.splitlines(keepends=True), "ready\n"])
    log = "".join(logged)
    assert log.startswith("starting\nkey loaded from env:\n[REDACTED:pem]")
    assert log.endswith("ready\n")
    assert not {chunk for chunk in _chunks(pem) if chunk in log}


def test_mime_wrapped_base64_of_a_secret_is_scrubbed_across_its_lines() -> None:
    secret = os.urandom(90)
    redactor = Redactor.from_secrets([SecretValue("blob", secret)])
    mime = base64.encodebytes(b"x" + secret + b"trailer").decode()
    logged = _run(StderrWindow(lambda: redactor), ["payload:\n", mime, "done\n"])
    joined = "".join(line.rstrip("\n") for line in logged)
    assert "[REDACTED:blob]" in joined
    encoded = base64.b64encode(b"x" + secret).decode()
    assert not {chunk for chunk in _chunks(encoded[4:], 8) if chunk in joined}


def test_memory_stays_bounded_however_much_is_written_without_a_pause() -> None:
    redactor = Redactor.from_secrets([SecretValue("k", b"hunter2-but-longer")])
    window = StderrWindow(lambda: redactor, hold_lines=16, hold_chars=1024)
    logged = 0
    peak = 0
    for i in range(5000):
        logged += len(window.feed(f"line {i} " + "x" * (i % 90) + "\n"))
        peak = max(peak, window.held_chars)
    logged += len(window.flush())
    assert logged == 5000
    # Context and lookahead: about 2 x 16 lines held plus 16 lines of context, never the whole stream.
    assert peak < 6 * 1024


def test_a_line_without_end_is_cut_at_the_window_size_and_still_scrubbed() -> None:
    secret = "s3cr3t-" + "q" * 20
    redactor = Redactor.from_secrets([SecretValue("k", secret.encode())])
    window = StderrWindow(lambda: redactor, hold_lines=4, hold_chars=100)
    logged = _run(window, ["a" * 95 + secret + "b" * 500])
    assert len(logged) == 7  # 622 characters, in pieces of at most 100
    # The secret straddles the first two pieces: each logs the label in its place.
    assert logged[0] == "a" * 95 + "[REDACTED:k]"
    assert logged[1].startswith("[REDACTED:k]b")
    assert "".join(logged[1:]) == "[REDACTED:k]" + "b" * 500


def test_the_pipe_logs_split_secrets_scrubbed_and_everything_else_at_eof(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "tok-" + "Zq9" * 10
    redactor = Redactor.from_secrets([SecretValue("tok", secret.encode())])
    caplog.set_level(logging.INFO, logger="mcp_gateway.connectors.mcp.stdio")
    writer, thread = stderr_pipe("up", lambda: redactor)
    writer.write('{"token": "' + secret[:12] + "\n")
    writer.flush()
    writer.write("    " + secret[12:] + '"}\nbye\n')
    writer.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    lines = [r.getMessage() for r in caplog.records if r.name == "mcp_gateway.connectors.mcp.stdio"]
    assert lines == [
        'upstream up stderr: {"token": "[REDACTED:tok]',
        'upstream up stderr: [REDACTED:tok]"}',
        "upstream up stderr: bye",
    ]


def test_held_lines_are_logged_after_a_quiet_spell_without_waiting_for_eof(
    caplog: pytest.LogCaptureFixture,
) -> None:
    redactor = Redactor.from_secrets([SecretValue("tok", b"hunter2-but-longer")])
    caplog.set_level(logging.INFO, logger="mcp_gateway.connectors.mcp.stdio")
    writer, thread = stderr_pipe("up", lambda: redactor, idle_seconds=0.05)
    try:
        writer.write("still running, token hunter2-but-longer\n")
        writer.flush()
        wait_until(
            lambda: any(r.getMessage().startswith("upstream up stderr: still") for r in caplog.records),
            timeout=10,
            what="the idle flush",
        )
        assert thread.is_alive()
        messages = [r.getMessage() for r in caplog.records]
        assert "upstream up stderr: still running, token [REDACTED:tok]" in messages
    finally:
        writer.close()
        thread.join(timeout=10)


def test_held_lines_wait_no_longer_than_the_max_delay_however_long_the_idle_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    redactor = Redactor.from_secrets([SecretValue("tok", b"hunter2-but-longer")])
    caplog.set_level(logging.INFO, logger="mcp_gateway.connectors.mcp.stdio")
    writer, thread = stderr_pipe("up", lambda: redactor, idle_seconds=3600, max_delay_seconds=0.05)
    try:
        writer.write("tick\n")
        writer.flush()
        wait_until(
            lambda: any(r.getMessage() == "upstream up stderr: tick" for r in caplog.records),
            timeout=10,
            what="the max-delay flush",
        )
        assert thread.is_alive()
    finally:
        writer.close()
        thread.join(timeout=10)


def test_a_redactor_that_fails_drops_the_lines_instead_of_logging_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> Redactor:
        raise RuntimeError("sealed")

    caplog.set_level(logging.INFO, logger="mcp_gateway.connectors.mcp.stdio")
    writer, thread = stderr_pipe("up", broken)
    writer.write("the secret is hunter2-but-longer\n")
    writer.close()
    thread.join(timeout=10)
    messages = [r.getMessage() for r in caplog.records]
    assert "upstream up stderr: lines dropped, the redactor failed" in messages
    assert not any("hunter2" in m for m in messages)


def test_a_window_whose_redactor_fails_holds_nothing_after_discarding() -> None:
    def broken() -> Redactor:
        raise RuntimeError("sealed")

    window = StderrWindow(broken, hold_lines=2, hold_chars=100)
    with pytest.raises(RuntimeError):
        for i in range(10):
            window.feed(f"line {i}\n")
    window.discard()
    assert not window.holding
    assert window.held_chars == 0

"""The protocol fuzzer (``reliability/fuzz/``) in the normal test run: a few hundred
sessions against a real server, derandomized so that every run draws the same ones.

Each session is followed by checks: both bystanders (plain and TLS, trio-websocket over
HTTP/1.1) still echo, and a fresh connection to the server the session used echoes. The
long campaign is ``nox -s fuzz`` (``python -m reliability.fuzz --sessions 10000``).
"""

from __future__ import annotations

import pytest
import trio
from hypothesis import given, settings

from reliability.fuzz import KNOWN_CRASHES, FuzzTarget, Report, Transport, campaign, sessions
from reliability.fuzz._actions import Connect, Handshake, Preface, Raw, Session, parse_session

# Wall-clock bounds for the whole test, far above what it takes (a few seconds): a server
# that holds sessions would otherwise make the test hang.
LIMIT = 120


def _assert_clean(report: Report) -> None:
    if not report.clean:
        pytest.fail("the fuzzer broke the server:\n" + report.summary(), pytrace=False)


async def _run(
    transports: tuple[Transport, ...], count: int, explicit: tuple[Session, ...] = ()
) -> Report:
    with trio.fail_after(LIMIT):
        async with FuzzTarget() as target:
            return await campaign(target, sessions(transports), sessions=count, explicit=explicit)


async def test_the_crashes_issue_11_reported_leave_the_server_serving() -> None:
    # Over HTTP/2: a view that closes first, answered; DATA after a 403; a body after a 404.
    report = await _run((), 0, KNOWN_CRASHES)
    assert report.sessions == len(KNOWN_CRASHES)
    _assert_clean(report)


async def test_an_upgrade_request_with_pipelined_bytes_leaves_the_server_serving() -> None:
    # Found by this fuzzer (reliability/README.md, "Results"): over plain HTTP/1.1, one
    # write: an upgrade request, and bytes before the answer. hypercorn answers them with
    # 400, then its clean-up raises out of TCPServer.run; a refusal does it every time.
    pipelined = (
        Session(
            Transport.HTTP1, (Handshake("/echo", "https://evil.example"), Raw(b"x")), "settle"
        ),
        Session(Transport.HTTP1_TLS, (Handshake("/reject"), Raw(b"x")), "settle"),
        Session(Transport.HTTP1, (Handshake("/echo"), Raw(b"GET / HTTP/1.1\r\n\r\n")), "close"),
    )
    report = await _run((), 0, pipelined)
    _assert_clean(report)


async def test_http1_sessions_leave_the_server_serving() -> None:
    report = await _run((Transport.HTTP1, Transport.HTTP1_TLS, Transport.TLS_RAW), 150)
    assert report.sessions == 150
    _assert_clean(report)


async def test_http2_sessions_leave_the_server_serving() -> None:
    report = await _run((Transport.HTTP2, Transport.HTTP2_TLS), 150)
    assert report.sessions == 150
    _assert_clean(report)


@settings(max_examples=100, derandomize=True, database=None, deadline=None)
@given(sessions())
def test_a_printed_reproduction_reads_back(session: Session) -> None:
    assert parse_session(repr(session)) == session


def test_what_is_no_session_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="not a fuzz session"):
        parse_session("__import__('os')")
    with pytest.raises(ValueError, match="not a fuzz session"):
        parse_session("Raw(b'x')")


async def test_a_refused_http2_handshake_then_a_close_leaves_no_view_running() -> None:
    # Reported by the campaign on main at d45d9e8 (reliability/README.md): the refusal of a
    # request hypercorn read after the connection had closed waited for ever. A race: on
    # main it left a view running in about 4 of 10 replays.
    refused = Session(
        Transport.HTTP2, (Preface(), Connect(1, "/reject", "https://good.example")), "close"
    )
    with trio.fail_after(LIMIT):
        async with FuzzTarget() as target:
            outcomes = [await target.run(refused) for _ in range(20)]
    assert [outcome.views_left for outcome in outcomes] == [0] * 20
    assert not any(outcome.failed for outcome in outcomes)

"""trio_bocaws's adapter to hypercorn's trio worker: every change to hypercorn, in one list.

:data:`PATCHES` holds one :class:`~._patch.Patch` per change: what it replaces, why, the
upstream issue, the tests that check it, and the fingerprint of the code it was written
for. :func:`install` applies them in one loop and :func:`uninstall` removes them in one
loop; neither does anything twice. A patch whose target's code is not the code it was
written for is left out, and a :class:`HypercornCompatibilityWarning` says so, once.
:mod:`trio_bocaws.hypercorn_fixes` is the public face of this package.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Final

from . import _h2, _h2_shutdown, _h2_websockets, _lean, _stream, _tcp, _worker
from ._patch import Applied, Patch

__all__ = [
    "PATCHES",
    "VERIFIED_VERSIONS",
    "HypercornCompatibilityWarning",
    "install",
    "installed",
    "original",
    "uninstall",
]

logger = logging.getLogger("trio_bocaws")


class HypercornCompatibilityWarning(UserWarning):
    """The installed hypercorn is not one trio_bocaws verified, and some of trio_bocaws's
    fixes to it are off: the message names the version and what is lost."""


_WS: Final = "hypercorn.protocol.ws_stream"
_H2: Final = "hypercorn.protocol.h2"
_HTTP2_TESTS: Final = "tests/test_http2.py::"
_LEAN_TESTS: Final = "tests/test_lean_path.py::"
_TCP: Final = "hypercorn.trio.tcp_server"
_ISSUE_127: Final = "https://github.com/pgjones/hypercorn/issues/127"

PATCHES: Final[tuple[Patch, ...]] = (
    Patch(
        name="stream status",
        module="hypercorn.trio.task_group",
        owner="TaskGroup",
        attribute="spawn_app",
        replace=_stream.spawn_app,
        why="Gives every WebSocket scope a StreamStatus (trio_bocaws._stream_status) before "
        "the app runs, so the app can learn the client's close code before it reads it.",
        upstream=_ISSUE_127,
        checked_by=(
            "tests/test_hypercorn_fixes.py::test_the_stream_status_has_the_clients_close_before_the_app_reads_it",
        ),
        written_for={"0.17.3": "57bdaea3a78ecf44", "0.18.0": "6afd191eb0de768f"},
    ),
    Patch(
        name="client close code",
        module=_WS,
        owner="WSStream",
        attribute="_send_wsproto_event",
        replace=_stream.send_wsproto_event,
        why="hypercorn answers the client's close frame but tells the app 1006; the code "
        "and reason it answered with are recorded in the stream's status.",
        upstream=_ISSUE_127,
        checked_by=("tests/test_hypercorn_fixes.py::test_the_app_sees_the_clients_close_code",),
        written_for={"0.17.3": "8b3501777e544ecf", "0.18.0": "8b3501777e544ecf"},
    ),
    Patch(
        name="close report",
        module=_WS,
        owner="WSStream",
        attribute="handle",
        replace=_stream.handle,
        why="Reports the recorded close to the app (not 1006), reads on to the client's "
        "close after an oversized message (else the stream never ends), and cancels the "
        "ping task with the stream (else a shutdown waits up to a ping interval). Bytes "
        "sent before the handshake's answer get one answer: hypercorn's 400, claimed before "
        "it goes out, or nothing once the app has begun its own (hypercorn sent a 400 after "
        "a 403 or a 101, or the app's answer after the 400: h11 raised, an ERROR logged).",
        upstream=_ISSUE_127,
        checked_by=(
            "tests/test_hypercorn_fixes.py::test_an_oversized_message_followed_by_a_close_ends_the_connection",
            "tests/test_hypercorn_fixes.py::test_the_app_sees_the_clients_close_code",
            "tests/test_early_bytes.py",
        ),
        written_for={"0.17.3": "e33094e54ac5910e", "0.18.0": "fe1efa815449035f"},
        depends_on=(f"{_WS}:WSStream._handle_events", f"{_WS}:WSStream._send_error_response"),
    ),
    Patch(
        name="send on a closed stream raises",
        module=_WS,
        owner="WSStream",
        attribute="app_send",
        replace=_stream.app_send,
        why="hypercorn drops a send on a closed stream without yielding: a loop that only "
        "sends never learns the client left, and spins, starving the worker. The app's "
        "answer to a handshake is claimed before it goes out, so that bytes the client "
        "sends meanwhile do not start a second response (see 'close report').",
        upstream="",
        checked_by=(
            "tests/test_hypercorn_fixes.py::test_a_send_only_loop_raises_once_the_client_drops",
            "tests/test_early_bytes.py",
        ),
        written_for={"0.17.3": "7ac2771131b81ecc", "0.18.0": "a89f9e131cd7bab5"},
    ),
    Patch(
        name="ping task ends with the stream",
        module=_WS,
        owner="WSStream",
        attribute="_send_pings",
        replace=_stream.send_pings,
        why="The ping task sleeps out its interval before it sees the stream closed, and "
        "a graceful shutdown waits for it.",
        upstream="",
        checked_by=(
            "tests/test_docs.py::test_with_or_without_pings_a_shutdown_does_not_wait_for_closed_connections",
        ),
        written_for={"0.17.3": "e578e2db2f7905fb", "0.18.0": "e578e2db2f7905fb"},
    ),
    Patch(
        name="bad frames answered with a close frame",
        module=_WS,
        owner="",
        attribute="Connection",
        replace=_stream.answering_connection,
        why="When wsproto rejects a frame (invalid UTF-8: 1007, a protocol error: 1002) "
        "hypercorn drops the TCP connection without a close frame; client and app see 1006.",
        upstream="",
        checked_by=(
            "tests/test_faults.py::test_invalid_utf8_in_a_text_frame_is_closed_with_1007",
        ),
        written_for={"0.17.3": "e1b735e2438d9bf3", "0.18.0": "e1b735e2438d9bf3"},
        depends_on=(f"{_WS}:WSStream._handle_events",),
        fingerprint_target=False,
    ),
    Patch(
        name="message size in bytes",
        module=_WS,
        owner="WebsocketBuffer",
        attribute="extend",
        replace=_stream.extend,
        why="hypercorn compares websocket_max_message_size with characters for text: a "
        "1.5 MB UTF-8 text passed a 1 MiB limit.",
        upstream="",
        checked_by=(
            "tests/test_hypercorn_fixes.py::test_a_text_over_the_limit_in_bytes_gets_1009",
        ),
        written_for={"0.17.3": "15dd4e1e13716049", "0.18.0": "15dd4e1e13716049"},
    ),
    Patch(
        name="close racing a send",
        module="hypercorn.trio.tcp_server",
        owner="TCPServer",
        attribute="_close",
        replace=_tcp.close,
        why="hypercorn's close holds the stream across a checkpoint; a send racing it fails "
        "with BusyResourceError, which stopped the worker.",
        upstream="",
        checked_by=(
            "tests/test_hypercorn_fixes.py::test_closing_while_a_send_starts_never_makes_the_send_busy",
        ),
        written_for={"0.17.3": "853ecf392d7ad739", "0.18.0": "853ecf392d7ad739"},
    ),
    Patch(
        name="write timeout",
        module="hypercorn.trio.tcp_server",
        owner="TCPServer",
        attribute="__init__",
        replace=_tcp.init,
        why="hypercorn's writes cannot be cancelled: a client that stops reading holds a "
        "send, and a shutdown, for ever. TCP_USER_TIMEOUT has the kernel drop it.",
        upstream="",
        checked_by=(
            "tests/test_docs.py::test_a_client_that_stops_reading_is_dropped_after_the_write_timeout",
        ),
        written_for={"0.17.3": "cd04359cc4b11621", "0.18.0": "6baac0c4781c5af3"},
    ),
    Patch(
        name="one connection's error stays in it",
        module="hypercorn.trio.tcp_server",
        owner="TCPServer",
        attribute="run",
        replace=_tcp.run,
        why="An exception other than OSError while serving one connection escaped into "
        "the server's nursery, which cancelled every connection and stopped the worker.",
        upstream="https://github.com/pgjones/hypercorn/issues/327",
        checked_by=("tests/test_isolation.py",),
        written_for={"0.17.3": "05a91832ee2c0e66", "0.18.0": "de5feb8a19f69f09"},
    ),
    Patch(
        name="lean read loop",
        module=_TCP,
        owner="TCPServer",
        attribute="_read_data",
        replace=_lean.read_data,
        why="Without a read_timeout, hypercorn still entered a fail_after(inf) cancel scope "
        "around every read, and trio's receive_some failed a first read on every idle wait; "
        "an HTTP/1.1 WebSocket's bytes passed through three layers that only hand them on. "
        "About 100,000 instructions per echoed message (profile_path.py).",
        upstream="",
        checked_by=(
            f"{_LEAN_TESTS}test_a_silent_peer_is_still_dropped_by_the_read_timeout",
            f"{_LEAN_TESTS}test_an_abrupt_disconnect_ends_the_connection",
            f"{_LEAN_TESTS}test_the_lean_paths_are_taken",
        ),
        written_for={"0.17.3": "fc177efbe419fe81", "0.18.0": "0b5460449e7b5076"},
        depends_on=(
            "hypercorn.protocol:ProtocolWrapper.handle",
            "hypercorn.protocol.h11:H11Protocol.handle",
            "hypercorn.protocol.h11:H11Protocol._handle_events",
            "hypercorn.protocol.h11:H11WSConnection",
        ),
    ),
    Patch(
        name="lean write",
        module=_TCP,
        owner="TCPServer",
        attribute="protocol_send",
        replace=_lean.protocol_send,
        why="hypercorn opened a shielded cancel scope and went through send_all for every "
        "write; a write the socket takes at once is now one os.write under the same lock "
        "(the shielded send_all stays for what is left, and for a cancelled writer). About "
        "75,000 instructions per echoed message.",
        upstream="",
        checked_by=(
            f"{_LEAN_TESTS}test_a_cancelled_send_to_a_client_that_stopped_reading_still_ends_whole",
            f"{_LEAN_TESTS}test_concurrent_senders_never_interleave",
            f"{_LEAN_TESTS}test_sends_racing_the_close_end_quietly",
            f"{_LEAN_TESTS}test_the_lean_paths_are_taken",
        ),
        written_for={"0.17.3": "1f5e638c95be1c27", "0.18.0": "1f5e638c95be1c27"},
    ),
    Patch(
        name="a failed connection says so",
        module="hypercorn.trio.tcp_server",
        owner="TCPServer",
        attribute="_read_data",
        replace=_tcp.read_data,
        why="A connection that fails on the server was cut with no word: a GOAWAY "
        "(HTTP/2) or a close frame 1011 (WebSocket) tells the client the server failed.",
        upstream="",
        checked_by=("tests/test_isolation.py",),
        written_for={"0.17.3": "dae383aedcc40b53", "0.18.0": "7edcb73e64800681"},
    ),
    Patch(
        name="DATA for a dropped HTTP/2 stream",
        module="hypercorn.protocol.h2",
        owner="H2Protocol",
        attribute="_handle_events",
        replace=_h2.handle_events,
        why="DATA on a stream hypercorn has forgotten (a refused handshake, a 404, a view "
        "that closed first) raised KeyError, and stopped the worker.",
        upstream="https://github.com/pgjones/hypercorn/issues/329",
        checked_by=("tests/test_isolation.py",),
        written_for={"0.17.3": "b94b609b8eeed218", "0.18.0": "ea29f11411f595f0"},
    ),
    Patch(
        name="no HTTP/2 stream lives on a closed connection",
        module=_H2,
        owner="H2Protocol",
        attribute="_create_stream",
        replace=_h2.create_stream,
        why="A request read after its connection had closed (a failed write) started its "
        "app on a stream whose sends waited for the ended send task: the app waited for "
        "ever. The stream is now closed at once and its buffer released.",
        upstream="",
        checked_by=(
            f"{_HTTP2_TESTS}test_a_request_read_after_its_connection_closed_leaves_no_view_running",
        ),
        written_for={"0.17.3": "ca403c2c2b2bab00", "0.18.0": "5eb343a1490780bc"},
        depends_on=(f"{_H2}:H2Protocol.handle", f"{_H2}:H2Protocol.send_task"),
    ),
    Patch(
        name="HTTP/2 stream buffer bounded",
        module=_H2,
        owner="",
        attribute="StreamBuffer",
        replace=_h2_websockets.bounded_stream_buffer,
        why="A stream's buffer released its sender whenever it found the stream's window "
        "shut, so a client that stopped reading one stream let it grow without limit "
        "(about 220 MB in 2 s), and no send ever blocked. Its waiters park in a ParkingLot: "
        "hypercorn's event, replaced on clear(), stranded one of several tasks sending on "
        "one stream.",
        upstream="",
        checked_by=(
            f"{_HTTP2_TESTS}test_a_stream_whose_window_stays_shut_is_dropped_and_the_others_go_on",
            # Fails with a bounded buffer whose waiters share hypercorn's _paused event.
            f"{_HTTP2_TESTS}test_concurrent_senders_on_one_stream_all_arrive_whole",
        ),
        written_for={"0.17.3": "09fcc5564b133d09", "0.18.0": "6ac4cb02d2a9c5a6"},
    ),
    Patch(
        name="write timeout per HTTP/2 stream",
        module=_H2,
        owner="H2Protocol",
        attribute="_send_data",
        replace=_h2_websockets.send_data,
        why="A client can stop reading one stream while its connection flows on, so "
        "TCP_USER_TIMEOUT never fires: a stream whose window stays shut for the write "
        "timeout is reset (CANCEL) and its app told the client is gone (1006).",
        upstream="",
        checked_by=(
            f"{_HTTP2_TESTS}test_a_stream_whose_window_stays_shut_is_dropped_and_the_others_go_on",
        ),
        written_for={"0.17.3": "5c537e3ce55a668f", "0.18.0": "5c537e3ce55a668f"},
    ),
    Patch(
        name="HTTP/2 sends released when the connection stops sending",
        module=_H2,
        owner="H2Protocol",
        attribute="send_task",
        replace=_h2_websockets.send_task,
        why="Once the connection's send task ended, a send waiting on a stream's buffer "
        "waited out its whole timeout: a shutdown took 5.2 s against a graceful_timeout of 3.",
        upstream="",
        checked_by=(
            f"{_HTTP2_TESTS}test_shutdown_closes_every_stream_of_a_shared_connection_with_1001",
            f"{_HTTP2_TESTS}test_a_connection_closed_with_a_stalled_stream_ends_at_once",
        ),
        written_for={"0.17.3": "4cb49c550af20631", "0.18.0": "8daee4a76905710d"},
    ),
    Patch(
        name="a WebSocket's HTTP/2 stream ended on both sides",
        module=_H2,
        owner="H2Protocol",
        attribute="_close_stream",
        replace=_h2_websockets.close_stream,
        why="A WebSocket closed by the client (or over the size limit) left its stream half "
        "open on the server's side: after 100 of them a connection could open no more.",
        upstream="",
        checked_by=(
            f"{_HTTP2_TESTS}test_more_websockets_than_the_stream_limit_over_one_connection",
        ),
        written_for={"0.17.3": "1df5677fd9208060", "0.18.0": "1df5677fd9208060"},
    ),
    Patch(
        name="HTTP/2 GOAWAY after the clients' last frames",
        module=_H2,
        owner="H2Protocol",
        attribute="_close_stream",
        replace=_h2_shutdown.close_stream,
        why="At a shutdown the GOAWAY went out as soon as the last app returned, before the "
        "clients' answers to their 1001 close frames came; h2 counts a connection closed "
        "once it has sent GOAWAY and answered each of them with a second GOAWAY, "
        "PROTOCOL_ERROR. The connection now waits for the clients to end their streams "
        "(bounded by graceful_timeout), then sends one GOAWAY, NO_ERROR, and drops what "
        "still crosses it.",
        upstream="https://github.com/python-hyper/h2/issues/1181",
        checked_by=(
            f"{_HTTP2_TESTS}test_shutdown_waits_for_the_close_replies_then_sends_one_goaway",
        ),
        written_for={"0.17.3": "84c2460aa8947988", "0.18.0": "db4d123b5eb979ce"},
        depends_on=(
            f"{_H2}:H2Protocol.stream_send",
            f"{_H2}:H2Protocol.handle",
            f"{_TCP}:TCPServer._idle_timeout",
        ),
    ),
    Patch(
        name="HTTP/2 connection open until its WebSockets end",
        module=_WS,
        owner="WSStream",
        attribute="idle",
        replace=_h2_websockets.websocket_idle,
        why="A WebSocket stream counted as idle once its app sent websocket.close, so at "
        "shutdown the shared connection was closed (GOAWAY) before the other streams' 1001 "
        "close frames went out: they saw 1006.",
        upstream="",
        checked_by=(
            f"{_HTTP2_TESTS}test_shutdown_closes_every_stream_of_a_shared_connection_with_1001",
        ),
        written_for={"0.17.3": "0d29061f62e6ea8c", "0.18.0": "8655002286ee595b"},
        depends_on=(f"{_WS}:WSStream.idle.fget", f"{_H2}:H2Protocol.stream_send"),
        fingerprint_target=False,
    ),
    Patch(
        name="no h2c upgrade when HTTP/2 is off",
        module="hypercorn.protocol.h11",
        owner="H11Protocol",
        attribute="_check_protocol",
        replace=_h2_websockets.check_protocol,
        why="hypercorn took up HTTP/2 on the plain port whatever its ALPN list said; with "
        "'h2' not in alpn_protocols (ServerConfig(http2=False)) an Upgrade: h2c is ignored.",
        upstream="",
        checked_by=(f"{_HTTP2_TESTS}test_http2_off_refuses_the_preface_and_ignores_h2c",),
        written_for={"0.17.3": "52b984ed3c6e7982", "0.18.0": "bfb2a85398d88c5b"},
    ),
    Patch(
        name="HTTP/2 preface refused when HTTP/2 is off",
        module="hypercorn.protocol",
        owner="",
        attribute="H2Protocol",
        replace=_h2_websockets.h2_protocol,
        why="With 'h2' not in alpn_protocols, a client's HTTP/2 preface on the plain port "
        "gets 505 and the connection is closed, instead of HTTP/2.",
        upstream="",
        checked_by=(f"{_HTTP2_TESTS}test_http2_off_refuses_the_preface_and_ignores_h2c",),
        written_for={"0.17.3": "e266f9aa6242c60e", "0.18.0": "4d1e1ebf004569fc"},
        depends_on=("hypercorn.protocol:ProtocolWrapper",),
        fingerprint_target=False,
    ),
    Patch(
        name="a send on an ended HTTP/2 stream raises",
        module=_H2,
        owner="H2Protocol",
        attribute="stream_send",
        replace=_h2_websockets.stream_send,
        why="DATA for a stream that was reset vanished without a checkpoint: a view that "
        "only sends spun at 100% CPU and never learned the stream had ended.",
        upstream="",
        checked_by=(
            f"{_HTTP2_TESTS}test_a_stream_whose_window_stays_shut_is_dropped_and_the_others_go_on",
            f"{_HTTP2_TESTS}test_data_for_a_stream_that_has_ended_raises_instead_of_vanishing",
        ),
        written_for={"0.17.3": "ea5ec810a1b0b8c8", "0.18.0": "fc46b7771b236daf"},
    ),
    Patch(
        name="runner features under hypercorn's command line",
        module="hypercorn.trio.run",
        owner="",
        attribute="worker_serve",
        replace=_worker.worker_serve,
        why="Under `hypercorn --worker-class trio module:app` importing the app is the only "
        "hook: open WebSockets hear of the shutdown at once, and SIGTERM in a worker "
        "process starts it.",
        upstream="",
        checked_by=("tests/test_cli.py::test_echo_example_under_each_command_line",),
        written_for={"0.17.3": "438f31e86ef9b93a", "0.18.0": "39ad1ae124e3feb2"},
    ),
    Patch(
        name="runner features under hypercorn.trio.serve",
        module="hypercorn.trio",
        owner="",
        attribute="worker_serve",
        replace=_worker.worker_serve,
        why="hypercorn.trio.serve looks worker_serve up in its own module.",
        upstream="",
        checked_by=("tests/test_serve.py::test_hypercorn_trio_serve_gets_the_shutdown_notice",),
        written_for={"0.17.3": "438f31e86ef9b93a", "0.18.0": "39ad1ae124e3feb2"},
    ),
)

_applied: list[Applied] = []
_skipped: list[Patch] = []
_warned: set[str] = set()


def hypercorn_version() -> str:
    """The installed hypercorn's version."""
    try:
        return version("hypercorn")
    except PackageNotFoundError:  # pragma: no cover - hypercorn is a dependency
        return "(unknown)"


VERIFIED_VERSIONS: Final = frozenset(found for patch in PATCHES for found in patch.written_for)
"""hypercorn releases whose code these fixes were written for and tested on."""


def installed() -> bool:
    """Whether :func:`install` has put the fixes in place (those this hypercorn allows)."""
    return bool(_applied)


def skipped() -> tuple[Patch, ...]:
    """The patches :func:`install` left out, their target's code being unknown to them."""
    return tuple(_skipped)


def install(patches: Sequence[Patch] | None = None) -> bool:
    """Apply every patch whose target is the code it was written for.

    Args:
        patches: The records to apply (:data:`PATCHES`; another list in tests).

    Returns:
        Whether every patch is in place (also when they already were).
    """
    if _applied:
        return not _skipped
    for patch in PATCHES if patches is None else patches:
        current = patch.current()
        if not patch.matches(current):
            _skipped.append(patch)
            continue
        setattr(patch.holder(), patch.attribute, patch.replace(current))
        _applied.append(Applied(patch, current))
    if _skipped:
        _warn_once()
    return not _skipped


def uninstall() -> None:
    """Put hypercorn's own code back, in the reverse order."""
    while _applied:
        done = _applied.pop()
        setattr(done.patch.holder(), done.patch.attribute, done.original)
    _skipped.clear()


def original(module: str, attribute: str, owner: str = "") -> object:
    """hypercorn's own version of a patched attribute (or the attribute, if not patched)."""
    for done in _applied:
        patch = done.patch
        if (patch.module, patch.owner, patch.attribute) == (module, owner, attribute):
            return done.original
    holder = importlib.import_module(module)
    return getattr(holder, owner).__dict__[attribute] if owner else getattr(holder, attribute)


def _warn_once() -> None:
    found = hypercorn_version()
    lost = "; ".join(f"{patch.name} ({patch.target}): {patch.why}" for patch in _skipped)
    message = (
        f"hypercorn {found} is not a version trio_bocaws verified "
        f"({', '.join(sorted(VERIFIED_VERSIONS))}), and its code differs where "
        f"{len(_skipped)} of trio_bocaws's {len(_skipped) + len(_applied)} fixes apply; "
        f"these are off: {lost}"
    )
    if found in VERIFIED_VERSIONS:
        message = message.replace("is not a version trio_bocaws verified", "is modified")
    if message in _warned:
        return
    _warned.add(message)
    logger.warning("%s", message)
    warnings.warn(message, HypercornCompatibilityWarning, stacklevel=4)

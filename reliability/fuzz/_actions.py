"""The session language: what one fuzz client does, as a list of actions.

A :class:`Session` is a transport (HTTP/1.1 or HTTP/2, plain or TLS, or raw bytes to the
TLS port), the actions taken on one connection, and how it ends. Hypothesis draws sessions
from the strategies at the bottom and, because a session is plain data, shrinks a failing
one to a short list that reproduces it; ``repr(session)`` is that reproduction.
"""

from __future__ import annotations

import enum
from typing import Final, TypeAlias

import attrs
from hypothesis import strategies as st

from ._app import ALLOWED_ORIGIN, PATHS
from ._wire import HANDSHAKE_FLAWS, HTTP2_CONNECT_FLAWS

__all__ = [
    "Action",
    "Close",
    "Connect",
    "Frame",
    "GoAway",
    "Handshake",
    "Message",
    "Ping",
    "Preface",
    "Priority",
    "Raw",
    "RawFrame",
    "Request",
    "Reset",
    "Session",
    "Settings",
    "Settle",
    "StreamData",
    "StreamRequest",
    "Transport",
    "Trickle",
    "WindowUpdate",
    "parse_session",
    "sessions",
]


class Transport(enum.Enum):
    """How a session's connection is made."""

    HTTP1 = "h1"
    """Plain TCP, HTTP/1.1."""
    HTTP1_TLS = "h1-tls"
    """TLS with ALPN ``http/1.1``."""
    HTTP2 = "h2"
    """Plain TCP, HTTP/2 with prior knowledge (the client opens with the preface)."""
    HTTP2_TLS = "h2-tls"
    """TLS with ALPN ``h2``."""
    TLS_RAW = "tls-raw"
    """Raw bytes to the TLS port: no TLS at all, or a broken one."""

    def __repr__(self) -> str:
        # A session's repr is its reproduction: it must read back (see parse_session).
        return f"Transport.{self.name}"

    @property
    def tls(self) -> bool:
        return self in (Transport.HTTP1_TLS, Transport.HTTP2_TLS, Transport.TLS_RAW)

    @property
    def http2(self) -> bool:
        return self in (Transport.HTTP2, Transport.HTTP2_TLS)


# -- Any transport ------------------------------------------------------------------------


@attrs.frozen
class Raw:
    """Bytes written as they are."""

    data: bytes


@attrs.frozen
class Trickle:
    """Bytes written one at a time, the server idle between them (a slow client)."""

    data: bytes


@attrs.frozen
class Settle:
    """Wait until the server has done all it can (it answers, closes, ...)."""


# -- WebSocket frames: actions over HTTP/1.1, the payload of DATA over HTTP/2 -------------


@attrs.frozen
class Message:
    """A well-formed message, from wsproto, in ``fragments`` frames."""

    text: bool
    payload: bytes
    fragments: int = 1


@attrs.frozen
class Frame:
    """One frame built by hand: any opcode, FIN, RSV bits, mask, and announced length."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0
    masked: bool = True
    claimed_length: int | None = None


@attrs.frozen
class Close:
    """A close frame; the code may be invalid, the reason bad UTF-8 or too long."""

    code: int | None
    reason: bytes = b""


@attrs.frozen
class Ping:
    """A ping (more than 125 bytes of payload is a protocol error)."""

    payload: bytes = b""


WebSocketFrames: TypeAlias = Message | Frame | Close | Ping

# -- HTTP/1.1 -------------------------------------------------------------------------------


@attrs.frozen
class Handshake:
    """A WebSocket opening request, maybe flawed, maybe cut after ``cut`` bytes."""

    path: str
    origin: str | None = ALLOWED_ORIGIN
    flaw: str | None = None
    cut: int | None = None


@attrs.frozen
class Request:
    """A plain HTTP/1.1 request whose body is announced by ``framing`` (or lied about)."""

    method: str
    path: str
    body: bytes = b""
    framing: str = "length"


# -- HTTP/2 ---------------------------------------------------------------------------------


@attrs.frozen
class Preface:
    """The connection preface and the client's SETTINGS, maybe flawed."""

    flaw: str | None = None


@attrs.frozen
class Connect:
    """An extended CONNECT opening a WebSocket on ``stream`` (RFC 8441), maybe flawed."""

    stream: int
    path: str
    origin: str | None = ALLOWED_ORIGIN
    flaw: str | None = None
    end_stream: bool = False


@attrs.frozen
class StreamRequest:
    """A plain HTTP/2 request on ``stream``."""

    stream: int
    method: str
    path: str
    end_stream: bool = True


@attrs.frozen
class StreamData:
    """DATA on ``stream``: WebSocket frames or raw bytes, whatever the stream's state."""

    stream: int
    content: WebSocketFrames | bytes
    end_stream: bool = False


@attrs.frozen
class Reset:
    """RST_STREAM."""

    stream: int
    code: int = 8  # CANCEL


@attrs.frozen
class Settings:
    """SETTINGS with any parameters (an ACK carrying some is a FRAME_SIZE_ERROR)."""

    parameters: tuple[tuple[int, int], ...] = ()
    ack: bool = False


@attrs.frozen
class WindowUpdate:
    """WINDOW_UPDATE (0 is a PROTOCOL_ERROR, too much a FLOW_CONTROL_ERROR)."""

    stream: int
    increment: int


@attrs.frozen
class Priority:
    """PRIORITY (a stream depending on itself is a PROTOCOL_ERROR)."""

    stream: int
    depends_on: int
    weight: int = 16
    exclusive: bool = False


@attrs.frozen
class GoAway:
    """GOAWAY from the client."""

    last_stream: int
    code: int = 0


@attrs.frozen
class RawFrame:
    """Any frame: unknown types, CONTINUATION out of place, stream 0 where it may not be."""

    frame_type: int
    flags: int
    stream: int
    payload: bytes = b""


Action: TypeAlias = (
    Raw
    | Trickle
    | Settle
    | Message
    | Frame
    | Close
    | Ping
    | Handshake
    | Request
    | Preface
    | Connect
    | StreamRequest
    | StreamData
    | Reset
    | Settings
    | WindowUpdate
    | Priority
    | GoAway
    | RawFrame
)

#: How a session ends: "close" (FIN), "abort" (RST), "half" (FIN, then wait for the
#: server's), "settle" (wait until the server is idle, then FIN).
ENDINGS: Final = ("close", "abort", "half", "settle")


@attrs.frozen
class Session:
    """One connection: its transport, what is done on it, and how it ends."""

    transport: Transport
    actions: tuple[Action, ...]
    ending: str = "close"


def parse_session(text: str) -> Session:
    """A session back from its ``repr`` (a reproduction printed by a campaign).

    Raises:
        ValueError: ``text`` is no session.
    """
    names = {name: globals()[name] for name in __all__ if name[0].isupper()}
    try:
        # Reproductions are written by this fuzzer and pasted by its user: evaluated with
        # the session language's names only, no builtins.
        session = eval(text, {"__builtins__": {}}, names)
    except Exception as error:
        raise ValueError(f"not a fuzz session: {error}") from error
    if not isinstance(session, Session):
        raise ValueError(f"not a fuzz session: {text[:80]!r}")
    return session


# -- Strategies -----------------------------------------------------------------------------

_payloads = st.binary(max_size=48)
_rarely = st.sampled_from([False, False, False, True])
_origins = st.sampled_from([ALLOWED_ORIGIN, ALLOWED_ORIGIN, None, "https://evil.example", "null"])
_paths = st.sampled_from(PATHS)
_close_codes = st.none() | st.sampled_from(
    [1000, 1001, 1002, 1003, 1005, 1006, 1007, 1011, 1015, 0, 999, 2999, 3000, 4999, 5000, 65535]
)
# A few stream ids carry a session: 1, 3 and 5 are the client's; 0, 2 and the largest id
# are where a client may not send (most) frames.
_streams = st.sampled_from([1, 1, 1, 3, 3, 5])
_any_streams = st.sampled_from([0, 1, 2, 3, 5, 7, 2**31 - 1])

_websocket_frames: st.SearchStrategy[WebSocketFrames] = st.one_of(
    st.builds(Message, st.booleans(), _payloads, st.integers(1, 3)),
    st.builds(Message, st.booleans(), _payloads, st.integers(1, 3)),
    st.builds(
        Frame,
        st.integers(0, 15),
        _payloads,
        fin=st.booleans(),
        rsv=st.sampled_from([0, 0, 0, 1, 4, 7]),
        masked=st.sampled_from([True, True, True, False]),
        claimed_length=st.none() | st.sampled_from([0, 1, 125, 126, 200, 2**16, 2**63]),
    ),
    st.builds(Close, _close_codes, st.binary(max_size=8) | st.just(b"r" * 124)),
    st.builds(Ping, st.binary(max_size=8) | st.just(b"p" * 126)),
)

_common: list[st.SearchStrategy[Action]] = [
    st.builds(Raw, st.binary(min_size=1, max_size=64)),
    st.builds(Trickle, st.binary(min_size=1, max_size=12)),
    st.just(Settle()),
    st.just(Settle()),
]

_handshakes = st.builds(
    Handshake,
    _paths,
    _origins,
    st.none() | st.none() | st.sampled_from(HANDSHAKE_FLAWS),
    st.none() | st.none() | st.none() | st.integers(0, 200),
)
_requests = st.builds(
    Request,
    st.sampled_from(["GET", "POST", "PUT", "CONNECT", "G\x00T"]),
    _paths,
    _payloads,
    st.sampled_from(
        ["length", "none", "short-length", "long-length", "bad-length", "chunked", "bad-chunked"]
    ),
)
_http1_actions: st.SearchStrategy[Action] = st.one_of(
    _handshakes, _requests, _websocket_frames, _websocket_frames, *_common
)

_connects = st.builds(
    Connect,
    _streams,
    _paths,
    _origins,
    st.none() | st.none() | st.none() | st.sampled_from(HTTP2_CONNECT_FLAWS),
    _rarely,  # END_STREAM on the HEADERS now and then
)
_stream_data = st.builds(StreamData, _streams, _websocket_frames | _payloads, _rarely)
# Weighted by repetition: a stream's story (open, answer, then more DATA, RST_STREAM) is
# where servers lose track of streams; connection-level oddities often end the connection.
_http2_actions: st.SearchStrategy[Action] = st.one_of(
    _connects,
    _connects,
    _connects,
    st.builds(StreamRequest, _streams, st.sampled_from(["GET", "POST"]), _paths, st.booleans()),
    _stream_data,
    _stream_data,
    _stream_data,
    _stream_data,
    st.just(Settle()),
    st.just(Settle()),
    st.just(Settle()),
    st.builds(Reset, _any_streams, st.sampled_from([0, 1, 2, 5, 8, 0xFFFF])),
    st.builds(Reset, _streams, st.just(8)),
    st.builds(
        Settings,
        st.lists(
            st.tuples(
                st.sampled_from([1, 2, 3, 4, 5, 6, 8, 9, 0xFF]),
                st.sampled_from([0, 1, 2, 100, 16383, 16384, 2**24, 2**31 - 1, 2**31, 2**32 - 1]),
            ),
            max_size=3,
        ).map(tuple),
        _rarely,
    ),
    st.builds(WindowUpdate, _any_streams, st.sampled_from([0, 1, 65535, 2**31 - 1])),
    st.builds(Priority, _any_streams, _any_streams, st.integers(1, 256), st.booleans()),
    st.builds(GoAway, _any_streams, st.integers(0, 15)),
    st.builds(
        RawFrame,
        st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xFF]),
        st.sampled_from([0, 1, 4, 5, 8, 0x20, 0xFF]),
        _any_streams,
        st.binary(max_size=24),
    ),
    *_common,
)


def _story(stream: int) -> st.SearchStrategy[tuple[Action, ...]]:
    """A stream opened, the server let answer, then more on that same stream."""
    opening = st.one_of(
        st.builds(Connect, st.just(stream), _paths, _origins, st.none(), st.just(False)),
        st.builds(StreamRequest, st.just(stream), st.just("POST"), _paths, st.just(False)),
    )
    follow_up = st.one_of(
        st.builds(StreamData, st.just(stream), _websocket_frames | _payloads, _rarely),
        st.builds(StreamData, st.just(stream), _websocket_frames, st.just(False)),
        st.builds(Reset, st.just(stream), st.sampled_from([0, 8])),
        st.builds(WindowUpdate, st.just(stream), st.sampled_from([0, 1, 65535])),
        st.just(Settle()),
    )
    return st.builds(
        lambda first, settle, rest: (first, *settle, *rest),
        opening,
        st.sampled_from([(Settle(),), (Settle(),), (Settle(),), ()]),
        st.lists(follow_up, min_size=1, max_size=4),
    )


_http2_pieces = st.lists(
    st.one_of(
        _http2_actions.map(lambda action: (action,)),
        _streams.flatmap(_story),
        _streams.flatmap(_story),
    ),
    min_size=1,
    max_size=6,
).map(lambda pieces: tuple(action for piece in pieces for action in piece))


def sessions(transports: tuple[Transport, ...] = tuple(Transport)) -> st.SearchStrategy[Session]:
    """Sessions over the given transports.

    HTTP/1.1 sessions mostly open with a handshake or a request, HTTP/2 ones with the
    preface (a flawed one now and then), so most sessions get past the first bytes.
    """
    choices: list[st.SearchStrategy[Session]] = []
    endings = st.sampled_from(ENDINGS)
    for transport in transports:
        if transport.http2:
            first: st.SearchStrategy[tuple[Action, ...]] = st.one_of(
                *[st.just((Preface(),))] * 8,
                st.builds(Preface, st.sampled_from(["truncated", "bad-magic", "no-settings"])).map(
                    lambda preface: (preface,)
                ),
            )
            rest = _http2_pieces
        elif transport is Transport.TLS_RAW:
            first = st.just(())
            rest = st.lists(st.one_of(*_common), max_size=4).map(tuple)
        else:
            first = st.one_of(_handshakes, _handshakes, _handshakes, _requests).map(
                lambda action: (action,)
            )
            rest = st.lists(_http1_actions, max_size=10).map(tuple)
        choices.append(
            st.builds(
                lambda transport, first, rest, ending: Session(transport, (*first, *rest), ending),
                st.just(transport),
                first,
                rest,
                endings,
            )
        )
    return st.one_of(*choices)

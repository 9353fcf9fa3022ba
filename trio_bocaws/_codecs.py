"""Messages in and out of ASGI events: what ``receive_text``, ``send_json`` and the rest do
besides waiting for the server."""

from __future__ import annotations

import json
from collections.abc import Callable, MutableMapping
from typing import Any, Final

from ._errors import UnexpectedMessageType

__all__ = ["DECODERS", "ENCODERS", "ClientJSONError", "Event", "dumps"]

Event = MutableMapping[str, Any]
"""An ASGI event (a message received or sent)."""


class ClientJSONError(json.JSONDecodeError):
    """A message from the client that is not JSON.

    Still a :class:`json.JSONDecodeError`, as the seed documents; its own class tells the
    connection's close policy that the client, not the view, is at fault (close 1007).
    """


def _refuse_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity, which JSON does not (and send_json refuses).
    raise ClientJSONError(f"{name} is not valid JSON", name, 0)


def text_of(event: Event) -> str:
    text: str | None = event.get("text")
    if text is None:
        raise UnexpectedMessageType("text", "bytes")
    return text


def bytes_of(event: Event) -> bytes:
    data: bytes | None = event.get("bytes")
    if data is None:
        raise UnexpectedMessageType("bytes", "text")
    return data


def json_of(event: Event) -> Any:
    text = event.get("text")
    if text is None:
        data = event.get("bytes") or b""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ClientJSONError(
                f"binary message is not UTF-8 ({exc.reason})", repr(data[:64]), exc.start
            ) from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ClientJSONError:
        raise
    except json.JSONDecodeError as exc:
        raise ClientJSONError(exc.msg, exc.doc, exc.pos) from None


def event_of(event: Event) -> Event:
    return event


def text_event(data: str) -> Event:
    if not isinstance(data, str):
        raise TypeError(f"send_text() takes a str, not {type(data).__name__}")
    return {"type": "websocket.send", "text": data}


def bytes_event(data: bytes | bytearray | memoryview) -> Event:
    if not isinstance(data, bytes):
        if not isinstance(data, (bytearray, memoryview)):
            raise TypeError(f"send_bytes() takes bytes, not {type(data).__name__}")
        data = bytes(data)
    return {"type": "websocket.send", "bytes": data}


def _sent_as_text(data: Any) -> Event:
    """``send()`` on a route whose ``send_type`` is ``"text"``."""
    if not isinstance(data, str):
        if isinstance(data, (bytes, bytearray, memoryview)):
            fix = "use ws.send_bytes() for a binary message, or send_type='bytes'"
        else:
            fix = "convert it to a str, or use send_type='json'"
        raise TypeError(
            f"send() takes a str on this route (send_type='text'), not "
            f"{type(data).__name__}: {fix}"
        )
    return {"type": "websocket.send", "text": data}


def _sent_as_bytes(data: Any) -> Event:
    """``send()`` on a route whose ``send_type`` is ``"bytes"``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        fix = (
            "use ws.send_text() for a text message, or send_type='text'"
            if isinstance(data, str)
            else "convert it to bytes, or use send_type='json'"
        )
        raise TypeError(
            f"send() takes bytes on this route (send_type='bytes'), not "
            f"{type(data).__name__}: {fix}"
        )
    return bytes_event(data)


def dumps(data: Any) -> str:
    """JSON as sent: compact, UTF-8 as is, no NaN or Infinity."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def json_event(data: Any) -> Event:
    return {"type": "websocket.send", "text": dumps(data)}


DECODERS: Final[dict[str, Callable[[Event], Any]]] = {
    "text": text_of,
    "bytes": bytes_of,
    "json": json_of,
    "event": event_of,
}
"""What ``receive()`` does with an event, by ``receive_type``."""

# None for "event": send_event checks and routes the event rather than wrapping a message.
ENCODERS: Final[dict[str, Callable[[Any], Event] | None]] = {
    "text": _sent_as_text,
    "bytes": _sent_as_bytes,
    "json": json_event,
    "event": None,
}
"""What ``send()`` makes of a message, by ``send_type``."""

"""Chat rooms with typed messages: attrs classes in and out, handled by an endpoint class.

    python -m trio_bocaws examples.typed_chat:app
    python -m trio_bocaws asyncapi examples.typed_chat:app     # its AsyncAPI document

A client joins with a name, says things, and leaves; everyone in the room hears of it.
Messages are JSON objects told apart by their ``type``: ``{"type": "join", "user": "ann"}``,
``{"type": "say", "text": "hi"}``, ``{"type": "leave"}``. A message that does not fit gets a
``problem`` answer, and the connection goes on. The document is also served at
http://127.0.0.1:8000/asyncapi.json.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Mapping
from typing import ClassVar, Literal

import attrs

from trio_bocaws import (
    App,
    AsyncAPIConfig,
    MessageValidationError,
    WebSocket,
    WebSocketDisconnect,
    WebSocketEndpoint,
    handles,
    run,
)

# [messages]
# What clients send.


@attrs.frozen
class Join:
    """Enter the room under a name."""

    type: Literal["join"]
    user: str


@attrs.frozen
class Say:
    """Say something to everyone in the room."""

    type: Literal["say"]
    text: str


@attrs.frozen
class Leave:
    """Leave the room (the server then closes the connection)."""

    type: Literal["leave"]


# What the server sends.


@attrs.frozen
class Said:
    """Someone said something; ``user`` is None for the room's own announcements."""

    type: Literal["said"]
    text: str
    at: datetime.datetime
    user: str | None = None


@attrs.frozen
class Problem:
    """A message the server could not take, and why."""

    type: Literal["problem"]
    errors: list[str]


ClientMessage = Join | Say | Leave
ServerMessage = Said | Problem
# [end messages]

app = App(asyncapi=AsyncAPIConfig(title="Typed chat", version="1.0.0"))
rooms: dict[str, set[WebSocket]] = {}


async def tell_everyone(room: str, message: Said) -> None:
    for member in list(rooms.get(room, ())):
        with contextlib.suppress(WebSocketDisconnect):  # they are leaving anyway
            await member.send(message)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


# [endpoint]
class Chat(WebSocketEndpoint):
    """A chat room: join with a name, then say things; everyone in the room hears them."""

    close_codes: ClassVar[Mapping[int, str]] = {4000: "said something before joining"}

    async def on_connect(self, ws: WebSocket, room: str) -> None:
        self.room = room
        self.user: str | None = None

    @handles(Join)
    async def join(self, ws: WebSocket, message: Join) -> None:
        self.user = message.user
        rooms.setdefault(self.room, set()).add(ws)
        await tell_everyone(self.room, Said("said", f"{message.user} joined", now()))

    @handles(Say)
    async def say(self, ws: WebSocket, message: Say) -> None:
        if self.user is None:
            await ws.close(4000, "join first")
            return
        await tell_everyone(self.room, Said("said", message.text, now(), self.user))

    @handles(Leave)
    async def leave(self, ws: WebSocket, message: Leave) -> None:
        await ws.close()

    async def on_invalid_message(self, ws: WebSocket, error: MessageValidationError) -> None:
        await ws.send(Problem("problem", [f"{path}: {problem}" for path, problem in error.errors]))

    async def on_disconnect(self, ws: WebSocket, code: int | None) -> None:
        members = rooms.get(self.room, set())
        members.discard(ws)
        if self.user is not None:
            await tell_everyone(self.room, Said("said", f"{self.user} left", now()))


app.add_websocket_route("/chat/{room}", Chat, receive_type=ClientMessage, send_type=ServerMessage)
# [end endpoint]


if __name__ == "__main__":
    print("Typed chat on ws://127.0.0.1:8000/chat/ROOM (Ctrl+C to stop)")
    run(app)

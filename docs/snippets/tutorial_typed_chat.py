"""typed_chat.py: the chat's messages as classes, checked when they arrive."""

from typing import Literal

import attrs

from trio_bocaws import App, Broadcast, MessageValidationError, WebSocket, message_converter


# What a client sends: a JSON object whose "type" says which class it is.
@attrs.frozen
class Join:
    type: Literal["join"]
    user: str


@attrs.frozen
class Say:
    type: Literal["say"]
    text: str


@attrs.frozen
class Leave:
    type: Literal["leave"]


# What the server sends.
@attrs.frozen
class Said:
    type: Literal["said"]
    user: str
    text: str


@attrs.frozen
class Problem:
    type: Literal["problem"]
    errors: list[str]


hub = Broadcast()
app = App(broadcast=hub)
converter = message_converter()  # the one typed routes use: classes to JSON and back


@app.websocket_route("/chat/{room:path}", receive_type=Join | Say | Leave, send_type=Problem)
async def chat(ws: WebSocket, room: str) -> None:
    members = hub.room(room)
    user = None
    while True:
        try:
            message = await ws.receive()  # a Join, a Say or a Leave, checked
        except MessageValidationError as error:
            await ws.send(Problem("problem", [f"{path}: {why}" for path, why in error.errors]))
            continue  # the connection goes on
        if isinstance(message, Join):
            user = message.user
            await members.join(ws)
        elif isinstance(message, Leave):
            return  # closes the connection (1000)
        elif user is None:
            await ws.send(Problem("problem", ["join first"]))
        else:
            said = Said("said", user, message.text)
            await members.send(converter.unstructure(said))  # as JSON, to everyone

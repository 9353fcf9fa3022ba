"""The typed messages guide (docs/typed-messages.md): an order desk.

(No ``from __future__ import annotations`` here: the docs' tests load this file without
registering it as a module, where cattrs could not resolve string annotations.)
"""

import datetime
import enum
from typing import Any, Literal

import attrs

from trio_bocaws import (
    App,
    MessageValidationError,
    TypedMessages,
    WebSocket,
    message_converter,
)


# [classes]
class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


@attrs.frozen
class Item:
    name: str
    price: float


@attrs.frozen
class Order:
    """Place an order."""

    type: Literal["order"]
    items: list[Item]
    priority: Priority = Priority.LOW
    note: str | None = None
    due: datetime.datetime | None = None


@attrs.frozen
class Cancel:
    """Cancel an order."""

    type: Literal["cancel"]
    order: int


@attrs.frozen
class Receipt:
    """What the desk answers."""

    type: Literal["receipt"]
    order: int
    total: float
    status: Literal["placed", "cancelled"]


# [end classes]


app = App()


# [route]
@app.websocket_route("/orders", receive_type=Order | Cancel, send_type=Receipt)
async def orders(ws: WebSocket) -> None:
    placed = 0
    async for message in ws:
        if isinstance(message, Order):
            placed += 1
            total = sum(item.price for item in message.items)
            await ws.send(Receipt("receipt", placed, total, "placed"))
        else:
            await ws.send(Receipt("receipt", message.order, 0.0, "cancelled"))


# [end route]


# [errors]
@app.websocket_route("/orders/patient", receive_type=Order | Cancel, send_type="json")
async def patient(ws: WebSocket) -> None:
    while True:
        try:
            message = await ws.receive()
        except MessageValidationError as error:
            await ws.send({"errors": [f"{path}: {problem}" for path, problem in error.errors]})
            continue  # the connection goes on: read the next message
        await ws.send({"ok": type(message).__name__})


# [end errors]


# [msgpack]
binary = TypedMessages(Order | Cancel | Receipt, encoding="msgpack")


@app.websocket_route("/orders/binary", value_type=binary)
async def orders_in_binary(ws: WebSocket) -> None:
    async for message in ws:
        if isinstance(message, Order):
            await ws.send(Receipt("receipt", 1, len(message.items), "placed"))


# [end msgpack]


# [converter]
converter = message_converter()


def loose_priority(value: Any, _: type) -> Priority:
    # This desk's older clients shout: "HIGH".
    return Priority(str(value).lower())


converter.register_structure_hook(Priority, loose_priority)
loose_app = App(converter=converter)


@loose_app.websocket_route("/orders", receive_type=Order, send_type="text")
async def loose_orders(ws: WebSocket) -> None:
    async for order in ws:
        await ws.send(order.priority.value)


# [end converter]

"""The handshake's answer on its own (trio_bocaws._handshake), over plain ASGI callables."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trio_bocaws import WebSocketStateError
from trio_bocaws._handshake import Handshake

from .fake_asgi import make_scope


class Peer:
    """The server's side: events to hand the app, and what it sent."""

    def __init__(self, *events: dict[str, Any]) -> None:
        self.events = list(events)
        self.sent: list[Any] = []
        self.connect = trio.Event()  # receive() waits for it when no event is queued

    async def receive(self) -> dict[str, Any]:
        if not self.events:
            await self.connect.wait()
            return {"type": "websocket.connect"}
        return self.events.pop(0)

    async def send(self, message: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.sent.append(message)


def test_acceptance_names_a_subprotocol_only_if_offered() -> None:
    handshake = Handshake(make_scope(), Peer().receive, Peer().send)
    message = handshake.acceptance("chat.v2", [("x-served-by", "a")])
    assert message == {
        "type": "websocket.accept",
        "subprotocol": "chat.v2",
        "headers": [(b"x-served-by", b"a")],
    }
    with pytest.raises(ValueError, match=r"chat\.v3"):
        handshake.acceptance("chat.v3", None)


def test_refusal_is_an_http_response_only_with_the_extension() -> None:
    with_extension = Handshake(make_scope(), Peer().receive, Peer().send)
    start, body = with_extension.refusal(401, "who are you?", None)
    assert start["status"] == 401
    assert body == {"type": "websocket.http.response.body", "body": b"who are you?"}
    plain = Handshake(make_scope(extensions={}), Peer().receive, Peer().send)
    assert plain.refusal(401, "who are you?", None) == [{"type": "websocket.close", "code": 1008}]
    with pytest.raises(ValueError, match="200"):
        plain.refusal(200, b"", None)


async def test_answer_takes_the_connect_event_then_sends() -> None:
    peer = Peer({"type": "websocket.connect"})
    handshake = Handshake(make_scope(), peer.receive, peer.send)
    assert await handshake.answer([{"type": "websocket.accept"}], "accept") is None
    assert peer.sent == [{"type": "websocket.accept"}]
    assert peer.events == []
    assert handshake.answering is None


async def test_a_client_that_left_first_gets_no_answer() -> None:
    gone = {"type": "websocket.disconnect", "code": 1001}
    peer = Peer(gone)
    handshake = Handshake(make_scope(), peer.receive, peer.send)
    assert await handshake.answer([{"type": "websocket.accept"}], "accept") == gone
    assert peer.sent == []


async def test_one_task_answers_and_the_other_can_wait_for_it() -> None:
    peer = Peer()
    handshake = Handshake(make_scope(), peer.receive, peer.send)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handshake.answer, [{"type": "websocket.accept"}], "accept")
        await trio.testing.wait_all_tasks_blocked()
        answering = handshake.answering
        assert answering is not None
        with pytest.raises(WebSocketStateError, match="cannot reject: another task"):
            await handshake.answer([{"type": "websocket.close", "code": 1008}], "reject")
        peer.connect.set()
        await answering.wait()
    assert peer.sent == [{"type": "websocket.accept"}]

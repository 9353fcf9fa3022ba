"""test_typed_chat.py: the typed chat, tested in-process."""

import pytest
from typed_chat import app

from trio_bocaws.testing import ConnectionClosed, TestClient


async def test_messages_are_checked_then_heard() -> None:
    async with (
        TestClient(app) as client,
        client.websocket_connect("/chat/lobby") as ada,
    ):
        await ada.send_json({"type": "join", "usr": "ada"})
        problem = {"type": "problem", "errors": ["$.user: required field missing"]}
        assert await ada.receive_json() == problem
        await ada.send_json({"type": "join", "user": "ada"})
        await ada.send_json({"type": "say", "text": "hi"})
        assert await ada.receive_json() == {"type": "said", "user": "ada", "text": "hi"}
        await ada.send_json({"type": "leave"})
        with pytest.raises(ConnectionClosed):
            await ada.receive()
        assert ada.close_code == 1000

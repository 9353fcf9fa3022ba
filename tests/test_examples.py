"""The examples, served by a real hypercorn trio server and used by real clients."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from examples import echo
from examples.chat import app as chat

from .conftest import Server, connect

Serve = Callable[..., Awaitable[Server]]
TIMEOUT = 5


async def _json(client: Any) -> Any:
    return json.loads(await client.get_message())


async def test_echo(serve: Serve) -> None:
    server = await serve(echo.app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/echo") as client:
            for message in ("hello", "", "ünïcode"):
                await client.send_message(message)
                assert await client.get_message() == message


async def test_chat_room_delivers_to_everyone_in_it_and_no_one_else(serve: Serve) -> None:
    server = await serve(chat.app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/chat/lobby?user=ada") as ada:
            assert await _json(ada) == {"user": "ada", "joined": True}
            async with connect(server.url + "/chat/lobby?user=bob") as bob:
                assert await _json(bob) == {"user": "bob", "joined": True}
                assert await _json(ada) == {"user": "bob", "joined": True}
                async with connect(server.url + "/chat/den?user=eve") as eve:
                    assert await _json(eve) == {"user": "eve", "joined": True}
                    await ada.send_message(json.dumps({"text": "hi all"}))
                    assert await _json(ada) == {"user": "ada", "text": "hi all"}
                    assert await _json(bob) == {"user": "ada", "text": "hi all"}
                    await eve.send_message(json.dumps({"text": "anyone?"}))
                    assert await _json(eve) == {"user": "eve", "text": "anyone?"}
            assert await _json(ada) == {"user": "bob", "left": True}
    assert chat.hub.room("lobby").members == 0
    assert chat.hub.room("den").members == 0


async def test_chat_reports_bad_messages_to_the_sender(serve: Serve) -> None:
    server = await serve(chat.app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/chat/lobby?user=ada") as ada:
            await ada.get_message()
            await ada.send_message(json.dumps({"txt": "typo"}))
            assert await _json(ada) == {"error": 'send {"text": "..."}'}


async def test_chat_serves_its_page(serve: Serve) -> None:
    server = await serve(chat.app)
    host, port = server.url.removeprefix("ws://").split(":")
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := await stream.receive_some():
                response += chunk
    assert response.startswith(b"HTTP/1.1 200")
    assert b"new WebSocket(" in response

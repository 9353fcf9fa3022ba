"""The examples, served by a real hypercorn trio server and used by real clients."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from examples import echo
from examples.chat import app as chat

from .conftest import Server, connect
from .raw_client import http_get

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


async def _said(client: Any, count: int) -> list[tuple[str, str]]:
    """The next ``count`` things said in the room, as (user, text), skipping who comes and
    goes; each must carry its id."""
    said: list[tuple[str, str]] = []
    while len(said) < count:
        message = await _json(client)
        if "id" in message:
            assert isinstance(message["id"], str)
            said.append((message["message"]["user"], message["message"]["text"]))
    return said


async def _said_with_ids(client: Any, count: int) -> list[tuple[str, str]]:
    said: list[tuple[str, str]] = []
    while len(said) < count:
        message = await _json(client)
        if "id" in message:
            said.append((message["id"], message["message"]["text"]))
    return said


async def test_chat_room_delivers_to_everyone_in_it_and_no_one_else(serve: Serve) -> None:
    server = await serve(chat.app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/chat/plaza?user=ada") as ada:
            assert await _json(ada) == {"here": {}}
            assert await _json(ada) == {"user": "ada", "joined": True}
            async with connect(server.url + "/chat/plaza?user=bob") as bob:
                assert await _json(bob) == {"here": {"ada": 1}}
                assert await _json(bob) == {"user": "bob", "joined": True}
                assert await _json(ada) == {"user": "bob", "joined": True}
                async with connect(server.url + "/chat/den?user=eve") as eve:
                    assert await _json(eve) == {"here": {}}
                    assert await _json(eve) == {"user": "eve", "joined": True}
                    await ada.send_message(json.dumps({"text": "hi all"}))
                    said = await _json(ada)
                    assert said == {"id": ANY_TEXT, "message": {"user": "ada", "text": "hi all"}}
                    assert await _json(bob) == said
                    await eve.send_message(json.dumps({"text": "anyone?"}))
                    assert await _said(eve, 1) == [("eve", "anyone?")]
            assert await _json(ada) == {"user": "bob", "left": True}
    assert chat.hub.room("plaza").members == 0
    assert chat.hub.room("den").members == 0


async def test_chat_newcomers_see_the_latest_messages_then_the_live_ones(
    serve: Serve,
) -> None:
    server = await serve(chat.app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/chat/news?user=ada") as ada:
            for number in range(chat.RECENT + 5):
                await ada.send_message(json.dumps({"text": f"m{number}"}))
            await _said(ada, chat.RECENT + 5)
            async with connect(server.url + "/chat/news?user=bob") as bob:
                assert await _json(bob) == {"here": {"ada": 1}}
                # The latest RECENT, oldest first; then what is said next.
                recent = [("ada", f"m{n}") for n in range(5, chat.RECENT + 5)]
                assert await _said(bob, chat.RECENT) == recent
                await ada.send_message(json.dumps({"text": "and now"}))
                assert await _said(bob, 1) == [("ada", "and now")]


async def test_chat_page_that_reconnects_with_its_last_id_misses_nothing_twice(
    serve: Serve,
) -> None:
    server = await serve(chat.app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/chat/resume?user=ada") as ada:
            async with connect(server.url + "/chat/resume?user=bob") as bob:
                await ada.send_message(json.dumps({"text": "one"}))
                [(last_id, text)] = await _said_with_ids(bob, 1)
                assert text == "one"
            # bob is away: ada goes on.
            for text in ("two", "three"):
                await ada.send_message(json.dumps({"text": text}))
            await _said(ada, 3)
            async with connect(server.url + f"/chat/resume?user=bob&since={last_id}") as bob:
                assert await _json(bob) == {"here": {"ada": 1}}
                assert [text for _, text in await _said_with_ids(bob, 2)] == ["two", "three"]
                await ada.send_message(json.dumps({"text": "four"}))
                # Nothing twice: the next thing said is the live one.
                assert [text for _, text in await _said_with_ids(bob, 1)] == ["four"]


async def test_chat_tells_a_page_too_far_behind_to_resync(serve: Serve) -> None:
    server = await serve(chat.app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/chat/gap?user=ada") as ada:
            await ada.send_message(json.dumps({"text": "kept"}))
            await _said(ada, 1)
            # An id older than what the room keeps, and one that is no id at all.
            for since in ("1-0", "garbage"):
                async with connect(server.url + f"/chat/gap?user=bob&since={since}") as bob:
                    assert await _json(bob) == {"here": {"ada": 1}}
                    assert await _json(bob) == {"resync": True}
                    assert await _said(bob, 1) == [("ada", "kept")]


async def test_chat_reports_bad_messages_to_the_sender(serve: Serve) -> None:
    server = await serve(chat.app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/chat/typos?user=ada") as ada:
            assert await _json(ada) == {"here": {}}
            assert await _json(ada) == {"user": "ada", "joined": True}
            await ada.send_message(json.dumps({"txt": "typo"}))
            assert await _json(ada) == {"error": 'send {"text": "..."}'}


async def test_chat_serves_its_page(serve: Serve) -> None:
    server = await serve(chat.app)
    with trio.fail_after(TIMEOUT):
        status, page = await http_get(server.url, "/")
    assert status == 200
    assert b"new WebSocket(" in page


# -- The JSON API ---------------------------------------------------------------------------


async def test_json_api_answers_and_reports_validation_errors(serve: Serve) -> None:
    from examples import json_api

    server = await serve(json_api.app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/rpc") as client:
            exchanges: list[tuple[str, Any]] = [
                ('{"id": 1, "op": "add", "args": [1, 2.5]}', {"id": 1, "result": 3.5}),
                ('{"id": 2, "op": "neg", "args": [4]}', {"id": 2, "result": -4}),
                (
                    '{"id": 3, "op": "pow", "args": [2]}',
                    {"id": 3, "error": {"code": "unknown-op", "message": ANY_TEXT}},
                ),
                (
                    '{"id": 4, "op": "add", "args": ["1"]}',
                    {"id": 4, "error": {"code": "bad-args", "message": ANY_TEXT}},
                ),
                (
                    '{"id": 5, "op": "neg", "args": [1, 2]}',
                    {"id": 5, "error": {"code": "bad-args", "message": ANY_TEXT}},
                ),
                ("[1, 2]", {"id": None, "error": {"code": "not-an-object", "message": ANY_TEXT}}),
                ("{not json", {"id": None, "error": {"code": "bad-json", "message": ANY_TEXT}}),
            ]
            for request, expected in exchanges:
                await client.send_message(request)
                assert await _json(client) == expected, request
            # Still open after the errors.
            await client.send_message('{"id": 6, "op": "mul", "args": [2, 3]}')
            assert await _json(client) == {"id": 6, "result": 6}


class _AnyText:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)


ANY_TEXT: Any = _AnyText()


# -- Authentication -------------------------------------------------------------------------


async def test_auth_refuses_without_a_token_and_greets_with_one(serve: Serve) -> None:
    from trio_websocket import ConnectionRejected

    from examples import auth

    server = await serve(auth.app)
    with trio.fail_after(TIMEOUT):
        for extra, status, body in [
            ({}, 401, b"a token is required"),
            ({"query": "?token=guess"}, 403, b"unknown token"),
        ]:
            with pytest.raises(ConnectionRejected) as refused:
                async with connect(server.url + "/me" + extra.get("query", "")):
                    pass  # pragma: no cover
            assert (refused.value.status_code, refused.value.body) == (status, body)
        assert (b"www-authenticate", b"Bearer") in (await _refusal(server.url + "/me")).headers
        async with connect(server.url + "/me?token=s3cr3t-ada") as client:
            assert await _json(client) == {"user": "ada"}
        bearer = [(b"authorization", b"Bearer s3cr3t-bob")]
        async with connect(server.url + "/me", extra_headers=bearer) as client:
            assert await _json(client) == {"user": "bob"}
            await client.send_message("hi")
            assert await _json(client) == {"user": "bob", "echo": "hi"}


async def _refusal(url: str) -> Any:
    from trio_websocket import ConnectionRejected

    with pytest.raises(ConnectionRejected) as refused:
        async with connect(url):
            pass  # pragma: no cover
    return refused.value


# -- The ticker -----------------------------------------------------------------------------


async def test_ticker_pushes_to_every_client(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples import ticker

    monkeypatch.setattr(ticker, "INTERVAL", 0.05)
    server = await serve(ticker.app)
    with trio.fail_after(TIMEOUT):
        async with (
            connect(server.url + "/ticks") as first,
            connect(server.url + "/ticks") as second,
        ):
            seen_first = [await _json(first) for _ in range(3)]
            seen_second = [await _json(second) for _ in range(3)]
    for seen in (seen_first, seen_second):
        ticks = [message["tick"] for message in seen]
        assert ticks == sorted(ticks) and len(set(ticks)) == 3
    # Ticks published once both had joined reached both.
    assert {m["tick"] for m in seen_first} & {m["tick"] for m in seen_second}


# -- Streaming a file -----------------------------------------------------------------------


async def test_file_stream_sends_chunks_and_a_checkable_summary(
    serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples import file_stream

    payload = bytes(range(256)) * 1000  # 256,000 bytes: 4 chunks of 64 KiB
    (tmp_path / "data.bin").write_bytes(payload)
    monkeypatch.setattr(file_stream, "FILES_DIR", tmp_path)
    server = await serve(file_stream.app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/files/data.bin") as client:
            chunks = []
            while isinstance(message := await client.get_message(), bytes):
                chunks.append(message)
            summary = json.loads(message)
        assert [len(chunk) for chunk in chunks] == [65536, 65536, 65536, 59392]
        assert b"".join(chunks) == payload
        assert summary == {
            "done": True,
            "size": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
        for name in ("missing.bin", ".."):
            refused = await _refusal(f"{server.url}/files/{name}")
            assert (refused.status_code, refused.body) == (404, f"no file named {name!r}".encode())
        # A name with a "/" matches no route at all.
        assert (await _refusal(f"{server.url}/files/..%2Fsecret")).status_code == 403

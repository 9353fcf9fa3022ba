"""test_chat_plugin.py: the same app, in process and on a real server."""

import json

import trio

from trio_bocaws.testing import Server, TestClient, open_websocket


async def test_in_process(bocaws_client: TestClient) -> None:
    async with bocaws_client.websocket_connect("/chat/lobby?user=ada") as ada:
        assert await ada.receive_json() == {"here": {}}  # who was there before her
        assert await ada.receive_json() == {"user": "ada", "joined": True}


async def test_on_a_real_server(bocaws_server: Server) -> None:
    with trio.fail_after(5):  # a network test needs a time limit
        async with open_websocket(bocaws_server.url + "/chat/lobby?user=bob") as bob:
            assert json.loads(await bob.get_message()) == {"here": {}}
            assert json.loads(await bob.get_message()) == {"user": "bob", "joined": True}

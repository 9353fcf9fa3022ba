"""test_chat.py: the chat room, tested in-process (no server, no network)."""

from chat.app import app

from trio_bocaws.testing import TestClient


async def test_everyone_in_the_room_hears_a_message() -> None:
    async with (
        TestClient(app) as client,
        client.websocket_connect("/chat/lobby?user=ada") as ada,
    ):
        assert await ada.receive_json() == {"here": {}}  # nobody else yet
        assert await ada.receive_json() == {"user": "ada", "joined": True}
        async with client.websocket_connect("/chat/lobby?user=bob") as bob:
            assert await bob.receive_json() == {"here": {"ada": 1}}
            assert await bob.receive_json() == {"user": "bob", "joined": True}
            assert await ada.receive_json() == {"user": "bob", "joined": True}
            await bob.send_json({"text": "hi ada"})
            said = await ada.receive_json()
            assert said["message"] == {"user": "bob", "text": "hi ada"}
            assert await bob.receive_json() == said  # the same message, with the same id
        assert await ada.receive_json() == {"user": "bob", "left": True}

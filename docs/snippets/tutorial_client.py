"""client.py: talk to the echo server from Python."""

import sys

import trio
from trio_websocket import open_websocket_url


async def main(url: str) -> None:
    async with open_websocket_url(url) as ws:
        for text in ("hello", "trio"):
            await ws.send_message(text)
            print(await ws.get_message())


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8000/echo")

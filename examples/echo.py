"""Echo server: every message comes back as it was sent.

Run it, then open http://127.0.0.1:8000 and type:

    python examples/echo.py
    hypercorn --worker-class trio examples.echo:app     (the same app, hypercorn's CLI)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio

from trio_bocaws import WebSocket

PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>trio_bocaws echo</title>
<form id="form">
  <input id="text" autofocus placeholder="say something"> <button>Send</button>
</form>
<pre id="log"></pre>
<script>
const log = (line) => document.getElementById("log").textContent += line + "\\n";
const ws = new WebSocket(`ws://${location.host}/echo`);
ws.onopen = () => log("connected");
ws.onmessage = (event) => log("< " + event.data);
ws.onclose = (event) => log(`closed ${event.code} ${event.reason}`);
document.getElementById("form").onsubmit = (event) => {
  event.preventDefault();
  const input = document.getElementById("text");
  ws.send(input.value);
  log("> " + input.value);
  input.value = "";
};
</script>
"""


async def echo(ws: WebSocket) -> None:
    async with ws:
        async for message in ws:
            await ws.send(message)


async def app(scope: Mapping[str, Any], receive: Any, send: Any) -> None:
    """A bare ASGI app: the page over HTTP, the echo over WebSocket."""
    if scope["type"] == "websocket":
        await echo(WebSocket(scope, receive, send))
    elif scope["type"] == "http":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/html; charset=utf-8")],
            }
        )
        await send({"type": "http.response.body", "body": PAGE})
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return


async def main() -> None:
    import hypercorn.config
    import hypercorn.trio

    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:8000"]
    print("Echo server on http://127.0.0.1:8000 (Ctrl+C to stop)")
    await hypercorn.trio.serve(app, config)


if __name__ == "__main__":
    trio.run(main)

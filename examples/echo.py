"""Echo: every message comes back as it was sent.

python examples/echo.py                                   # then open http://127.0.0.1:8000
python -m trio_bocaws examples.echo:app
hypercorn --worker-class trio examples.echo:app
"""

from __future__ import annotations

from trio_bocaws import App, HTMLPage, WebSocket, run

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>trio_bocaws echo</title>
<form id="form">
  <input id="text" autofocus placeholder="say something" autocomplete="off">
  <button>Send</button>
</form>
<pre id="log"></pre>
<script>
const log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
const ws = new WebSocket(`ws://${location.host}/echo`);
ws.onopen = () => log("connected");
ws.onmessage = (event) => log("< " + event.data);
ws.onclose = (event) => log(`closed: ${event.code} ${event.reason}`);
document.getElementById("form").onsubmit = (event) => {
  event.preventDefault();
  const input = document.getElementById("text");
  ws.send(input.value);
  log("> " + input.value);
  input.value = "";
};
</script>
"""

app = App(HTMLPage(PAGE))


@app.websocket_route("/echo")
async def echo(ws: WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


if __name__ == "__main__":
    print("Echo server: open http://127.0.0.1:8000 (Ctrl+C to stop)")
    run(app)

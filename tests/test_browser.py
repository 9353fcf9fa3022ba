"""The chat example's page in a real browser (headless Chromium), on a real server.

Two people open the page in separate browser contexts, join one room, and talk; the test
asserts on what each page shows, as a person would read it. A screenshot of the receiving
page is saved to ``test-artifacts/chat.png``, also when the test fails.
"""

from __future__ import annotations

import json
import socket
import ssl
from contextlib import AsyncExitStack, suppress
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import trio
import trustme
from trio_websocket import open_websocket_url

from examples.chat import app as chat
from trio_bocaws import App, ServerConfig, WebSocket, WebSocketDisconnect, serve
from trio_bocaws.testing import serving

from .browser import chromium, drive, require_browser
from .redis_server import redis_server
from .subprocesses import ServerProcess, server_process

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# The whole test, Chromium's start included: 2.4 s here when the machine is idle, 4-7 s
# when it is busy.
TIMEOUT = 30
# Each browser step (and each expect, Playwright's default): Chromium's side of one step
# takes milliseconds, so this only bounds how long a failure takes to report.
STEP_TIMEOUT_MS = 5_000
# Not URL-safe, to check the page's encoding of the room into the WebSocket URL.
ROOM = "trio café"


def _open(browser: Browser, url: str, errors: list[str]) -> Page:
    """A page in its own context (its own cookies, like another person's browser)."""
    context = browser.new_context(viewport={"width": 800, "height": 600})
    context.set_default_timeout(STEP_TIMEOUT_MS)
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))
    page.goto(url)
    return page


def _join(page: Page, name: str) -> None:
    page.get_by_placeholder("your name").fill(name)
    page.get_by_role("button", name="Join").click()


def _two_people_chat(browser: Browser, *, url: str, screenshot: Path) -> None:
    """Runs in the Playwright thread: bob waits in the room, ada joins, talks and leaves,
    and cy, who comes later, sees what she said."""
    from playwright.sync_api import Error, expect

    errors: list[str] = []
    bob = _open(browser, url, errors)
    try:
        expect(bob.locator("h1")).to_have_text(f"Room {ROOM}")
        _join(bob, "bob")
        bob_sees = bob.locator("#messages li")
        expect(bob_sees).to_have_text(["bob joined"])
        expect(bob.locator("#join")).to_be_hidden()
        expect(bob.locator("#people li")).to_have_text(["bob"])

        ada = _open(browser, url, errors)
        ada.get_by_placeholder("your name").fill("ada")
        # An impatient double click must not join twice (one socket, one notice).
        ada.get_by_role("button", name="Join").dblclick()
        ada_sees = ada.locator("#messages li")
        expect(ada_sees).to_have_text(["ada joined"])
        expect(bob_sees).to_have_text(["bob joined", "ada joined"])
        # Who is here: bob was there before ada came, and both see both.
        expect(ada.locator("#people li")).to_have_text(["ada", "bob"])
        expect(bob.locator("#people li")).to_have_text(["ada", "bob"])

        message = ada.get_by_placeholder("message")
        message.fill("hello")
        ada.get_by_role("button", name="Send").click()
        expect(message).to_have_value("")
        expect(ada_sees).to_have_text(["ada joined", "ada: hello"])
        expect(bob_sees).to_have_text(["bob joined", "ada joined", "ada: hello"])

        ada.context.close()  # the browser closes her WebSocket
        expect(bob_sees).to_have_text(["bob joined", "ada joined", "ada: hello", "ada left"])
        expect(bob.locator("#people li")).to_have_text(["bob"])
        # Notices are styled apart from what people said.
        expect(bob.locator("#messages li.notice")).to_have_text(
            ["bob joined", "ada joined", "ada left"]
        )
        expect(bob.get_by_placeholder("message")).to_be_visible()

        # A newcomer sees what was said before they came.
        cy = _open(browser, url, errors)
        _join(cy, "cy")
        expect(cy.locator("#messages li:not(.notice)")).to_have_text(["ada: hello"])
        expect(cy.locator("#people li")).to_have_text(["bob", "cy"])
        cy.context.close()
    except BaseException:
        with suppress(Error):  # the page as the failure left it, if the browser is still up
            bob.screenshot(path=screenshot, timeout=STEP_TIMEOUT_MS)
        raise
    bob.screenshot(path=screenshot)
    assert errors == [], "uncaught JavaScript errors"


async def test_chat_page_two_people_talk_in_chromium() -> None:
    require_browser()
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "chat.png"
    screenshot.unlink(missing_ok=True)
    with trio.fail_after(TIMEOUT):
        async with serving(chat.app) as server:
            url = server.url.replace("ws://", "http://", 1) + "/?" + urlencode({"room": ROOM})
            async with chromium() as cdp_url:
                await drive(cdp_url, partial(_two_people_chat, url=url, screenshot=screenshot))
    # The server has shut down: every view has ended and left its room.
    assert chat.hub.room(ROOM).members == 0
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


# -- The chat across two workers, one of which dies --------------------------------------

# Two server processes and Redis start, one is killed and started again: more than the
# test above, on a busy machine.
RESUME_TIMEOUT = 90
# How long the page may take to come back: its backoff after a few failed attempts, plus a
# server process's start on a busy machine.
RECONNECT_TIMEOUT_MS = 30_000
RESUME_ROOM = "resume"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class _Sender:
    """ada, on the other worker: says m1, m2... until stopped, and records everything said
    in the room, in the room's order, as she receives it."""

    def __init__(self, url: str, nursery: trio.Nursery) -> None:
        self.url = url
        self.nursery = nursery
        self.sent = 0
        self.said: list[str] = []
        self._stop = trio.Event()
        self._sent_changed = trio.Event()
        self._done = trio.Event()

    async def run(self) -> None:
        async with open_websocket_url(self.url) as ws, trio.open_nursery() as nursery:
            nursery.start_soon(self._listen, ws)
            while not self._stop.is_set():
                self.sent += 1
                await ws.send_message(json.dumps({"text": f"m{self.sent}"}))
                self._sent_changed.set()
                self._sent_changed = trio.Event()
                with trio.move_on_after(0.05):  # a steady trickle, not a flood
                    await self._stop.wait()
            # Everything she sent has come back to her: the room's list is complete.
            while f"ada: m{self.sent}" not in self.said:
                await self._sent_changed.wait()
            nursery.cancel_scope.cancel()
        self._done.set()

    async def _listen(self, ws: Any) -> None:
        while True:
            message = json.loads(await ws.get_message())
            if "id" in message:
                self.said.append(f"{message['message']['user']}: {message['message']['text']}")
                self._sent_changed.set()
                self._sent_changed = trio.Event()

    async def wait_sent(self, count: int) -> None:
        while self.sent < count:
            await self._sent_changed.wait()

    async def finish(self) -> list[str]:
        self._stop.set()
        await self._done.wait()
        return self.said


class _Worker:
    """A chat server process on a fixed port, which the test kills and starts again."""

    def __init__(self, port: int, redis_url: str, stack: AsyncExitStack) -> None:
        self.port = port
        self.redis_url = redis_url
        self.stack = stack
        self.server: ServerProcess | None = None

    async def start(self) -> None:
        command = ["trio_bocaws", "examples.chat.app:app", "-b", f"127.0.0.1:{self.port}"]
        self.server = await self.stack.enter_async_context(
            server_process(command, env={"CHAT_BROADCAST_URL": self.redis_url})
        )

    async def kill(self) -> None:
        """SIGKILL: its connections drop with no close frame, and it leaves nothing tidy."""
        assert self.server is not None
        self.server.process.kill()
        await self.server.process.wait()


def _resume_after_a_dropped_connection(
    browser: Browser, *, url: str, sender: _Sender, worker: _Worker, screenshot: Path
) -> None:
    """Runs in the Playwright thread: bob's page is on the worker that dies; ada, on the
    other worker, keeps talking."""
    from playwright.sync_api import Error, expect

    errors: list[str] = []
    bob = _open(browser, url, errors)
    try:
        _join(bob, "bob")
        said = bob.locator("#messages li:not(.notice)")
        send = bob.get_by_role("button", name="Send")
        expect(send).to_be_enabled()
        trio.from_thread.run_sync(sender.nursery.start_soon, sender.run)
        bob.wait_for_function("document.querySelectorAll('#messages li:not(.notice)').length >= 3")

        trio.from_thread.run(worker.kill)
        expect(bob.locator("#messages li.notice").last).to_contain_text("disconnected (1006")
        expect(send).to_be_disabled()
        # ada goes on while bob's worker is down, and after it is back.
        trio.from_thread.run(sender.wait_sent, sender.sent + 5)
        trio.from_thread.run(worker.start)
        expect(send).to_be_enabled(timeout=RECONNECT_TIMEOUT_MS)
        message = bob.get_by_placeholder("message")
        message.fill("back")
        send.click()
        expect(bob.locator("#messages li:not(.notice)", has_text="bob: back")).to_have_count(1)
        expect(bob.locator("#people li")).to_have_text(["ada", "bob"])
        trio.from_thread.run(sender.wait_sent, sender.sent + 5)
        everything = trio.from_thread.run(sender.finish)

        # The page shows everything said in the room, each once, in the room's order.
        assert "bob: back" in everything
        expect(said).to_have_text(everything)
        # ada's connection is over: the list of who is here says so, live.
        expect(bob.locator("#people li")).to_have_text(["bob"])
    except BaseException:
        with suppress(Error):
            bob.screenshot(path=screenshot, timeout=STEP_TIMEOUT_MS)
        raise
    bob.screenshot(path=screenshot)
    assert errors == [], "uncaught JavaScript errors"


async def test_chat_page_resumes_in_order_after_its_worker_is_killed_in_chromium(
    tmp_path: Path,
) -> None:
    """Two workers behind one Redis: bob's page is on one, ada on the other. bob's worker
    is killed and started again while ada keeps talking; his page reconnects by itself,
    resumes after the last message it had, and shows every message once, in order."""
    require_browser()
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "chat-resume.png"
    screenshot.unlink(missing_ok=True)
    with trio.fail_after(RESUME_TIMEOUT):
        async with redis_server(tmp_path) as redis, AsyncExitStack() as stack:
            page_worker = _Worker(_free_port(), redis.url, stack)
            other_worker = _Worker(_free_port(), redis.url, stack)
            await page_worker.start()
            await other_worker.start()
            url = f"http://127.0.0.1:{page_worker.port}/?room={RESUME_ROOM}"
            async with trio.open_nursery() as nursery:
                sender = _Sender(
                    f"ws://127.0.0.1:{other_worker.port}/chat/{RESUME_ROOM}?user=ada", nursery
                )
                async with chromium() as cdp_url:
                    script = partial(
                        _resume_after_a_dropped_connection,
                        url=url,
                        sender=sender,
                        worker=page_worker,
                        screenshot=screenshot,
                    )
                    await drive(cdp_url, script)
                nursery.cancel_scope.cancel()  # sender.finish() ended it, unless the page failed
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


# -- Many sockets over HTTP/2 (RFC 8441) ---------------------------------------------------

# Opens SOCKETS WebSockets at once; the server closes the even ones, the page the odd ones.
MANY_SOCKETS_PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>many sockets</title>
<script>
const SOCKETS = 12;
window.closes = [];
for (let i = 0; i < SOCKETS; i++) {
  const closer = i % 2 ? "page" : "server";
  const ws = new WebSocket(`wss://${location.host}/closed-by-${closer}`);
  ws.onopen = () => ws.send(`hello ${i}`);
  ws.onmessage = (event) => {
    if (closer === "page") ws.close(4001, `page done ${i}`);
  };
  ws.onclose = (event) => window.closes.push([closer, event.code, event.reason]);
}
</script>
"""
SOCKETS = 12


async def _page(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/html; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": MANY_SOCKETS_PAGE})


def _many_sockets_app(seen: list[tuple[str, str, int, str]]) -> App:
    """Records (path, HTTP version, close code, reason) of every WebSocket it serves."""
    app = App(_page)

    @app.websocket_route("/closed-by-server")
    async def closed_by_server(ws: WebSocket) -> None:
        await ws.receive_text()
        await ws.close(4000, "server done")
        seen.append(("server", ws.scope["http_version"], 4000, "server done"))

    @app.websocket_route("/closed-by-page", caught_close_codes=())
    async def closed_by_page(ws: WebSocket) -> None:
        await ws.send_text(await ws.receive_text())
        try:
            await ws.receive_text()
        except WebSocketDisconnect as exc:
            seen.append(("page", ws.scope["http_version"], exc.code, exc.reason))

    return app


def _open_and_close_many(browser: Browser, *, url: str, rounds: int) -> list[list[Any]]:
    """Runs in the Playwright thread: load the page ``rounds`` times on one connection and
    return every socket's close, as the page saw it."""
    context = browser.new_context(ignore_https_errors=True)
    context.set_default_timeout(STEP_TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    closes: list[list[Any]] = []
    for _ in range(rounds):
        page.goto(url)
        page.wait_for_function(f"window.closes.length === {SOCKETS}")
        closes += page.evaluate("window.closes")
    context.close()
    assert errors == [], "uncaught JavaScript errors"
    return closes


async def test_many_sockets_over_http2_open_and_close_both_ways_in_chromium(
    tmp_path: Path,
) -> None:
    require_browser()
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certificate.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    certificate.private_key_pem.write_to_path(str(keyfile))
    config = ServerConfig(
        bind="127.0.0.1:0", certfile=str(certfile), keyfile=str(keyfile), log_level="warning"
    )
    seen: list[tuple[str, str, int, str]] = []
    stop = trio.Event()
    rounds = 18  # 108 sockets closed by the page, over the 100 streams a connection may hold
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            [url] = await nursery.start(
                partial(serve, _many_sockets_app(seen), config, shutdown_trigger=stop.wait)
            )
            page_url = url.replace("wss://", "https://", 1) + "/"
            # The certificate is trustme's: Chromium is told not to check it.
            async with chromium("--ignore-certificate-errors") as cdp_url:
                closes = await drive(
                    cdp_url, partial(_open_and_close_many, url=page_url, rounds=rounds)
                )
            # The server is still up: a new connection is served.
            trusting = ssl.create_default_context()
            authority.configure_trust(trusting)
            async with open_websocket_url(url + "/closed-by-page", ssl_context=trusting) as ws:
                await ws.send_message("again")
                assert await ws.get_message() == "again"
            stop.set()
    page_closes = [("page", 4001, f"page done {i}") for i in range(1, SOCKETS, 2)] * rounds
    server_closes = [("server", 4000, "server done")] * (rounds * SOCKETS // 2)
    assert sorted(map(tuple, closes)) == sorted(page_closes + server_closes)
    # Every socket the page opened went over HTTP/2; the last one is trio-websocket's.
    assert sorted(seen[:-1]) == sorted(
        [(closer, "2", code, reason) for closer, code, reason in page_closes + server_closes]
    )
    assert seen[-1][:2] == ("page", "1.1")

"""The chat example's page in a real browser (headless Chromium), on a real server.

Two people open the page in separate browser contexts, join one room, and talk; the test
asserts on what each page shows, as a person would read it. A screenshot of the receiving
page is saved to ``test-artifacts/chat.png``, also when the test fails.
"""

from __future__ import annotations

import ssl
from contextlib import suppress
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
    """Runs in the Playwright thread: bob waits in the room, ada joins, talks and leaves."""
    from playwright.sync_api import Error, expect

    errors: list[str] = []
    bob = _open(browser, url, errors)
    try:
        expect(bob.locator("h1")).to_have_text(f"Room {ROOM}")
        _join(bob, "bob")
        bob_sees = bob.locator("#messages li")
        expect(bob_sees).to_have_text(["bob joined"])
        expect(bob.locator("#join")).to_be_hidden()

        ada = _open(browser, url, errors)
        ada.get_by_placeholder("your name").fill("ada")
        # An impatient double click must not join twice (one socket, one notice).
        ada.get_by_role("button", name="Join").dblclick()
        ada_sees = ada.locator("#messages li")
        expect(ada_sees).to_have_text(["ada joined"])
        expect(bob_sees).to_have_text(["bob joined", "ada joined"])

        message = ada.get_by_placeholder("message")
        message.fill("hello")
        ada.get_by_role("button", name="Send").click()
        expect(message).to_have_value("")
        expect(ada_sees).to_have_text(["ada joined", "ada: hello"])
        expect(bob_sees).to_have_text(["bob joined", "ada joined", "ada: hello"])

        ada.context.close()  # the browser closes her WebSocket
        expect(bob_sees).to_have_text(["bob joined", "ada joined", "ada: hello", "ada left"])
        # Notices are styled apart from what people said.
        expect(bob.locator("#messages li.notice")).to_have_text(
            ["bob joined", "ada joined", "ada left"]
        )
        expect(bob.get_by_placeholder("message")).to_be_visible()
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

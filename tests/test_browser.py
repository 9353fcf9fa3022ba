"""The chat example's page in a real browser (headless Chromium), on a real server.

Two people open the page in separate browser contexts, join one room, and talk; the test
asserts on what each page shows, as a person would read it. A screenshot of the receiving
page is saved to ``test-artifacts/chat.png``, also when the test fails.
"""

from __future__ import annotations

from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import trio

from examples.chat import app as chat
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

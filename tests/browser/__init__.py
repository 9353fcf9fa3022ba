"""Headless Chromium for tests: Trio owns the browser process, Playwright drives it.

Trio starts the system's Chromium (Debian's ``chromium`` package: this network allows no
browser downloads, so ``playwright install`` is never needed) with a fresh profile and reads
its DevTools address from its log. The test's browser steps are ordinary Playwright sync
code that runs in one worker thread, connected over CDP, while the test's Trio loop goes on
serving. Playwright's sync API blocks and its async API needs asyncio, so a thread is the
way to keep both away from Trio.

Because Trio owns the process, a test's ``trio.fail_after`` is a real limit: on cancellation
the thread is abandoned and Chromium is stopped, which makes every Playwright call still
waiting in that thread fail at once, so the thread ends too and no browser outlives the test.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from importlib.util import find_spec
from subprocess import DEVNULL, PIPE
from typing import TYPE_CHECKING, Final, TypeVar

import trio

from ..components import require

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from playwright.sync_api import Browser

__all__ = ["FLAGS", "chromium", "drive", "require_browser"]

T = TypeVar("T")

# Headless, and nothing that reaches out to the network by itself: on a closed network
# Chromium's own background connections are refused and slow or break the start.
FLAGS: Final = (
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",  # any free port; Chromium logs which
)
# Chromium starts in well under a second here; this is for a loaded CI machine.
STARTUP_TIMEOUT: Final = 15.0
# Time to shut down cleanly on SIGTERM before SIGKILL.
STOP_TIMEOUT: Final = 5.0
_LISTENING: Final = re.compile(rb"DevTools listening on (ws://\S+)")


def require_browser() -> str:
    """The Chromium executable; skip (locally) or fail (in CI) without it or Playwright."""
    executable = shutil.which("chromium")
    require(executable is not None, "Chromium", "install it with `apt-get install chromium`")
    require(
        find_spec("playwright") is not None,
        "Playwright",
        "install it with `pip install playwright` (it drives the system's Chromium: "
        "`playwright install` is not needed)",
    )
    assert executable is not None
    return executable


async def _stop(process: trio.Process) -> None:
    if process.returncode is None:
        process.terminate()
    with trio.move_on_after(STOP_TIMEOUT, shield=True):
        await process.wait()
    if process.returncode is None:
        process.kill()
        with trio.move_on_after(STOP_TIMEOUT, shield=True):
            await process.wait()


@asynccontextmanager
async def chromium(*flags: str) -> AsyncIterator[str]:
    """Run headless Chromium with a fresh, empty profile; yield its DevTools WebSocket URL.

    ``flags`` are added to :data:`FLAGS`. On exit, or cancellation, Chromium gets SIGTERM,
    then SIGKILL if it lingers.
    """
    executable = require_browser()
    with tempfile.TemporaryDirectory(
        prefix="trio-bocaws-chromium-", ignore_cleanup_errors=True
    ) as profile:
        process = await trio.lowlevel.open_process(
            [executable, *FLAGS, *flags, f"--user-data-dir={profile}", "about:blank"],
            stdin=DEVNULL,
            stdout=DEVNULL,
            stderr=PIPE,
        )
        log = bytearray()
        address: list[str] = []
        ready = trio.Event()

        async def read_log() -> None:
            # Read to the end, not only to the address: a full pipe would stall Chromium.
            assert process.stderr is not None
            async for chunk in process.stderr:
                log.extend(chunk)
                if not address and (found := _LISTENING.search(log)):
                    address.append(found[1].decode())
                    ready.set()
            ready.set()  # it exited

        async def listening() -> str:
            with trio.move_on_after(STARTUP_TIMEOUT):
                await ready.wait()
            if address:
                return address[0]
            code = process.poll()
            what = f"did not start in {STARTUP_TIMEOUT}s" if code is None else f"exited ({code})"
            raise RuntimeError(f"Chromium {what}; its log:\n{log.decode(errors='replace')}")

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_log)
                try:
                    yield await listening()
                finally:
                    # Bounded and shielded inside; it also ends read_log, as the pipe closes.
                    await _stop(process)  # noqa: ASYNC102
        except BaseExceptionGroup as group:
            # The test's own failure, rather than a group around it.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise


def _in_thread(cdp_url: str, script: Callable[[Browser], T]) -> T:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.connect_over_cdp(cdp_url, timeout=STARTUP_TIMEOUT * 1000)
        try:
            return script(browser)
        finally:
            browser.close()


async def drive(cdp_url: str, script: Callable[[Browser], T]) -> T:
    """Run ``script(browser)`` in one worker thread, which owns the Playwright connection
    to the Chromium at ``cdp_url`` for its whole life, and return what it returns.

    Cancellable: the thread is then abandoned, and ends as soon as :func:`chromium` stops
    the browser.
    """
    return await trio.to_thread.run_sync(
        partial(_in_thread, cdp_url, script),
        thread_name="playwright",
        abandon_on_cancel=True,
    )

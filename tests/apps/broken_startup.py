"""An App whose startup fails, for the command line's error report."""

from __future__ import annotations

from trio_bocaws import App

app = App()


@app.on_startup
async def connect_to_database() -> None:
    raise ConnectionRefusedError("database is down")

"""trio_bocaws.serve and ServerConfig: running an app inside a Trio program."""

from __future__ import annotations

import gc
from functools import partial
from typing import Any

import attrs
import pytest
import trio
from trio_websocket import ConnectionClosed

from trio_bocaws import App, ServerConfig, WebSocket, serve

from .conftest import close_of, connect, echo_app, waiting_app

TIMEOUT = 5


async def test_serve_reports_websocket_urls_and_serves(nursery: trio.Nursery) -> None:
    config = ServerConfig(bind=("127.0.0.1:0", "127.0.0.1:0"))
    urls = await nursery.start(serve, echo_app(), config)
    assert len(urls) == 2
    with trio.fail_after(TIMEOUT):
        for url in urls:
            assert url.startswith("ws://127.0.0.1:")
            async with connect(url + "/echo") as client:
                await client.send_message("hi")
                assert await client.get_message() == "hi"


async def test_shutdown_closes_every_connection_with_1001_at_once() -> None:
    app, all_waiting, seen = waiting_app(5)
    stop = trio.Event()
    closes: list[tuple[int, str]] = []

    async def client(url: str) -> None:
        async with connect(url + "/wait") as connection:
            with pytest.raises(ConnectionClosed) as closed:
                await connection.get_message()
            closes.append(close_of(closed))

    # The grace period is long: closing must not wait for it.
    config = ServerConfig(bind="127.0.0.1:0", graceful_timeout=30)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            [url] = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
            async with trio.open_nursery() as clients:
                for _ in range(5):
                    clients.start_soon(client, url)
                await all_waiting.wait()
                stop.set()
        # serve() has returned, well within the grace period.
    assert closes == [(1001, "server shutting down")] * 5
    assert seen == ["cancelled"] * 5


@pytest.mark.parametrize("threshold", [1000, 50, None])
async def test_serve_sets_the_full_collection_threshold_while_it_runs(
    threshold: int | None,
) -> None:
    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []
    app = App()

    @app.websocket_route("/gc")
    async def collector(ws: WebSocket) -> None:
        seen.append(gc.get_threshold())
        await ws.send_text("ok")

    config = ServerConfig(bind=("127.0.0.1:0",), gc_full_threshold=threshold)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            (url,) = await nursery.start(serve, app, config)
            async with connect(url + "/gc") as client:
                assert await client.get_message() == "ok"
            nursery.cancel_scope.cancel()
    expected = before if threshold is None else (before[0], before[1], threshold)
    assert seen == [expected]
    assert gc.get_threshold() == before  # put back when the server stopped


async def test_serve_runs_one_worker_only() -> None:
    with pytest.raises(ValueError, match="one worker"):
        await serve(echo_app(), ServerConfig(workers=2))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bind": "localhost"}, "invalid bind address 'localhost'"),
        ({"bind": "127.0.0.1:99999"}, "invalid bind address"),
        ({"bind": ()}, "at least one address"),
        ({"workers": 0}, "workers must be an int of at least 1"),
        ({"certfile": "cert.pem"}, "certfile and keyfile go together"),
        ({"ping_interval": 5}, "ping_interval needs read_timeout"),
        ({"ping_interval": 5, "read_timeout": 5}, "must be longer than ping_interval"),
        ({"read_timeout": 5}, "read_timeout without ping_interval"),
        ({"graceful_timeout": -1}, "graceful_timeout must be a number above 0"),
        ({"max_message_size": 0}, "max_message_size"),
        ({"log_level": "loud"}, "log_level"),
        ({"gc_full_threshold": 0}, "gc_full_threshold must be an int of at least 1"),
    ],
)
def test_server_config_names_the_problem(options: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        ServerConfig(**options)


def test_server_config_maps_onto_hypercorn() -> None:
    config = ServerConfig(
        bind=["0.0.0.0:9000", "[::1]:9001", "unix:/tmp/x.sock"],
        workers=3,
        graceful_timeout=2,
        ping_interval=10,
        read_timeout=25,
        max_message_size=1024,
        log_level="warning",
    )
    hyper = config.to_hypercorn()
    assert hyper.bind == ["0.0.0.0:9000", "[::1]:9001", "unix:/tmp/x.sock"]
    assert (hyper.workers, hyper.worker_class) == (3, "trio")
    assert (hyper.graceful_timeout, hyper.websocket_ping_interval, hyper.read_timeout) == (
        2,
        10,
        25,
    )
    assert hyper.websocket_max_message_size == 1024
    assert hyper.loglevel == "WARNING"
    assert attrs.evolve(config, workers=1).workers == 1


def test_root_path_is_validated_and_passed_to_hypercorn() -> None:
    assert ServerConfig(root_path="/chat").to_hypercorn().root_path == "/chat"
    for bad in ("chat", "/chat/", 7):
        with pytest.raises(ValueError, match="root_path"):
            ServerConfig(root_path=bad)  # type: ignore[arg-type]


async def test_one_serve_is_one_worker_with_one_shutdown_signal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """serve() once wrapped hypercorn twice (its own wrapper, then the patched
    worker_serve): two ServerShutdown objects, two collector settings."""
    from trio_bocaws._shutdown import ServerShutdown

    made: list[ServerShutdown] = []
    own_init = ServerShutdown.__init__

    def counted(self: ServerShutdown) -> None:
        own_init(self)
        made.append(self)

    monkeypatch.setattr(ServerShutdown, "__init__", counted)
    stop = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            config = ServerConfig(bind=("127.0.0.1:0",))
            [url] = await nursery.start(
                partial(serve, shutdown_trigger=stop.wait), echo_app(), config
            )
            async with connect(url + "/echo") as client:
                await client.send_message("hi")
                assert await client.get_message() == "hi"
                stop.set()
                with pytest.raises(ConnectionClosed) as closed:
                    await client.get_message()
    assert close_of(closed) == (1001, "server shutting down")
    assert len(made) == 1


def test_our_options_are_not_hypercorns() -> None:
    """hypercorn's Config carries hypercorn's settings only; ours travel on their own."""
    config = ServerConfig(write_timeout=7.5, gc_full_threshold=50)
    assert not [name for name in vars(config.to_hypercorn()) if "trio_bocaws" in name]
    options = config.worker_options()
    assert (options.write_timeout, options.gc_full_threshold, options.sigterm) == (7.5, 50, False)
    assert config.worker_options(sigterm=True).sigterm


async def test_hypercorn_trio_serve_gets_the_shutdown_notice() -> None:
    """Under hypercorn.trio.serve (or its command line) importing trio_bocaws is the hook."""
    import hypercorn.trio

    hyper = ServerConfig(bind=("127.0.0.1:0",)).to_hypercorn()
    stop = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            [bind] = await nursery.start(
                partial(hypercorn.trio.serve, echo_app(), hyper, shutdown_trigger=stop.wait)
            )
            async with connect(bind.replace("http", "ws", 1) + "/echo") as client:
                await client.send_message("hi")
                assert await client.get_message() == "hi"
                stop.set()
                with pytest.raises(ConnectionClosed) as closed:
                    await client.get_message()
    assert close_of(closed) == (1001, "server shutting down")

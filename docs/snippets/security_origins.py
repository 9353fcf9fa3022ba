"""Which web pages may open the socket: the server's own, and the ones listed."""

from trio_bocaws import App, AppConfig, WebSocket

# [config]
config = AppConfig(
    allowed_origins=[
        "https://app.example.com",  # this origin exactly: https, port 443
        "*.partner.example",  # any subdomain of partner.example, any scheme and port
        "http://localhost:5173",  # a development server: scheme, host and port
    ],
)
app = App(config=config)
# [end config]


@app.websocket_route("/account")
async def account(ws: WebSocket) -> None:
    await ws.send_text("balance: 42")


# [browsers only]
# Pages only: refuse clients that send no Origin (scripts, other servers).
browsers_only = App(config=AppConfig(allow_missing_origin=False))
# [end browsers only]
browsers_only.add_websocket_route("/account", account)

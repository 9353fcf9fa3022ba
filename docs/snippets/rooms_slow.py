"""prices.py: a price feed that closes the connection of a member that falls behind."""

from trio_bocaws import App, Broadcast, BroadcastConfig, WebSocket

# [config]
# Up to 64 prices may wait for each member; one more and that member is closed (1013).
hub = Broadcast(config=BroadcastConfig(buffer_size=64, on_overflow="close"))
# [end config]
app = App(broadcast=hub)
prices = hub.room("prices")


@app.websocket_route("/prices")
async def listen(ws: WebSocket) -> None:
    await prices.join(ws)
    async for _ in ws:  # the client has nothing to say; wait until it leaves
        pass


async def publish(symbol: str, price: float) -> None:
    await prices.send_json({"symbol": symbol, "price": price})

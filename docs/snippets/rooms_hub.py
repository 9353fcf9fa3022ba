"""news.py: a hub on its own, outside an App: publish to channels, subscribe to them."""

import trio

from trio_bocaws import Broadcast


async def listen(hub: Broadcast, task_status: trio.TaskStatus[None]) -> None:
    async with hub.subscribe("news", "weather") as subscription:
        task_status.started()  # subscribed: from here on, nothing is missed
        async for message in subscription:
            print(message.channel, message.data, sep=": ")  # data is str or bytes, as published
            if message.data == "that's all":
                return
    # Out of the block: unsubscribed (also when the task is cancelled).


async def main() -> None:
    async with Broadcast("memory://") as hub, trio.open_nursery() as nursery:
        await nursery.start(listen, hub)
        await hub.publish("news", "trio 0.35 is out")
        await hub.publish("sports", "nobody subscribed to this one")
        await hub.publish("weather", "that's all")
    print(f"subscribers left: {hub.subscribers('news')}")


if __name__ == "__main__":
    trio.run(main)

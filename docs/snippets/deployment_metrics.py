"""metered.py: OpenTelemetry metrics, scraped by Prometheus from the app's own port."""

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import make_asgi_app

from trio_bocaws import App, WebSocket

# The SDK, with a reader that hands the instruments to prometheus_client when scraped.
reader = PrometheusMetricReader()
provider = MeterProvider(metric_readers=[reader])

# Plain HTTP requests go to prometheus_client's ASGI app: GET /metrics answers the scrape.
app = App(make_asgi_app(), metrics=provider)


@app.websocket_route("/echo")
async def echo(ws: WebSocket) -> None:
    async for message in ws:
        await ws.send(message)

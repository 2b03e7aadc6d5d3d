"""The sidecar's HTTP(S) endpoint: GET /metrics (the pull writer's outputs and the self-metrics)
and a landing page on /.

It is the exporter's server (exporter/server.py), as the remediator's webhook is: TLS, basic
auth and response headers come from a web-config file in the exporter-toolkit format
(exporter/webconfig.py, `server.web_config_file` or --web.config.file), with the exporter's
connection cap, gzip, and one rendering shared by concurrent scrapes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from anomaly_sidecar import __version__
from exporter.server import ExporterHTTPServer, ExporterRequestHandler
from exporter.webconfig import WebConfig

METRICS_PATH = "/metrics"


class SidecarHTTPServer(ExporterHTTPServer):
    max_connections_setting = "the sidecar's fixed cap"

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry,
                 web_config: WebConfig) -> None:
        super().__init__(address, registry, METRICS_PATH, web_config)
        self.RequestHandlerClass = SidecarRequestHandler


class SidecarRequestHandler(ExporterRequestHandler):
    server_version = f"anomaly-sidecar/{__version__}"

    def _landing_page(self) -> bytes:
        return (f"<!DOCTYPE html><html><head><title>anomaly sidecar</title></head><body>"
                f"<h1>anomaly sidecar {__version__}</h1>"
                f"<p>Forecasts and anomaly scores of Prometheus series.</p>"
                f'<p><a href="{METRICS_PATH}">Metrics</a></p></body></html>\n').encode()

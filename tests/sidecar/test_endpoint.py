"""The sidecar's /metrics behind the exporter's web-config: TLS and basic auth, checked with
requests and with a real Prometheus scraping it."""

from __future__ import annotations

import pytest
import requests

from tests.exporter.tls import write_web_config
from tests.sidecar.helpers import minimal_config, sidecar_process
from tests.support.services import free_port, prometheus, query, wait_for

SCRAPE = """\
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: anomaly_sidecar
    scheme: https
    tls_config:
      ca_file: {ca_file}
    basic_auth:
      username: prometheus
      password: scrape-secret
    static_configs:
      - targets: ['127.0.0.1:{port}']
"""


def test_tls_and_basic_auth_come_from_the_exporters_web_config(tmp_path):
    web_config, certificates = write_web_config(tmp_path, "prometheus", "scrape-secret")
    port = free_port()
    config = tmp_path / "sidecar.yml"
    # the backend is unreachable: the endpoint serves the self-metrics all the same
    config.write_text(minimal_config("http://127.0.0.1:9", port).replace(
        "server:\n", f"server:\n  web_config_file: {web_config}\n"))
    verify = str(certificates.ca_file)
    basic = ("prometheus", "scrape-secret")
    with sidecar_process(config, port, scheme="https", verify=verify, auth=basic) as sidecar:
        url = sidecar.metrics_url
        refused = requests.get(url, verify=verify, timeout=5)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("Basic")
        assert requests.get(url, verify=verify, auth=("prometheus", "wrong"),
                            timeout=5).status_code == 401
        answer = requests.get(url, verify=verify, auth=basic, timeout=5)
        assert answer.status_code == 200 and "anomaly_sidecar_build_info" in answer.text
        assert answer.headers["Server"].startswith("anomaly-sidecar/")
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url, timeout=5)  # not signed by a CA the client trusts
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(url.replace("https://", "http://"), timeout=5)
        with prometheus(tmp_path / "prometheus",
                        SCRAPE.format(ca_file=verify, port=port)) as service:
            wait_for(lambda: query(service.url, 'up{job="anomaly_sidecar"} == 1'), 30,
                     message="Prometheus scrapes the sidecar over TLS with basic auth")
            assert query(service.url, "anomaly_sidecar_build_info")

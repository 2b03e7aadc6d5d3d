"""The real exporter process over HTTP and HTTPS: landing page, basic auth, TLS, client certs,
HEAD, and the cap on open connections."""

from __future__ import annotations

import bcrypt
import pytest
import requests

from tests.exporter.support import exporter_process
from tests.exporter.tls import make_certificates
from tests.support.services import assert_idle_clients_get_no_threads, wait_for

PASSWORD = "s3cret-scrape"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def password_hash() -> str:
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()


def test_landing_page_telemetry_path_and_404(tmp_path) -> None:
    with exporter_process(tmp_path, "--web.telemetry-path=/metrics",
                          "--gpu.simulate=1") as exporter:
        landing = requests.get(exporter.url + "/", timeout=5)
        assert landing.status_code == 200 and 'href="/metrics"' in landing.text
        metrics = requests.get(exporter.url + "/metrics", timeout=5)
        assert metrics.headers["Content-Type"].startswith("text/plain")
        assert "aiinfra_gpu_up{" in metrics.text
        assert requests.get(exporter.url + "/nope", timeout=5).status_code == 404
        gzipped = requests.get(exporter.url + "/metrics", timeout=5,
                               headers={"Accept-Encoding": "gzip"})
        assert gzipped.headers.get("Content-Encoding") == "gzip" and "aiinfra_" in gzipped.text


def test_custom_telemetry_path(tmp_path) -> None:
    with exporter_process(tmp_path, "--web.telemetry-path=/custom/metrics",
                          "--no-collector.gpu", "--no-collector.xid",
                          ready_path="/custom/metrics") as exporter:
        assert "aiinfra_cpu_seconds_total" in requests.get(exporter.url + "/custom/metrics",
                                                           timeout=5).text
        assert requests.get(exporter.url + "/metrics", timeout=5).status_code == 404


def test_tls_with_basic_auth(tmp_path, certificates, password_hash) -> None:
    config = tmp_path / "web.yml"
    config.write_text(
        "tls_server_config:\n"
        f"  cert_file: {certificates.server_cert}\n"
        f"  key_file: {certificates.server_key.name}\n"  # relative to the config file's folder
        "basic_auth_users:\n"
        f"  prometheus: '{password_hash}'\n")
    (tmp_path / certificates.server_key.name).write_bytes(certificates.server_key.read_bytes())
    with exporter_process(tmp_path, f"--web.config.file={config}", "--gpu.simulate=2",
                          scheme="https", verify=str(certificates.ca_file),
                          auth=("prometheus", PASSWORD)) as exporter:
        url = exporter.url + "/metrics"
        verify = str(certificates.ca_file)
        good = requests.get(url, verify=verify, auth=("prometheus", PASSWORD), timeout=5)
        assert good.status_code == 200 and "aiinfra_gpu_utilization_ratio{" in good.text
        assert requests.get(url, verify=verify, auth=("prometheus", PASSWORD), timeout=5).ok
        no_password = requests.get(url, verify=verify, timeout=5)
        assert no_password.status_code == 401
        assert no_password.headers["WWW-Authenticate"].startswith("Basic")
        wrong = requests.get(url, verify=verify, auth=("prometheus", "guess"), timeout=5)
        assert wrong.status_code == 401
        unknown_user = requests.get(url, verify=verify, auth=("root", PASSWORD), timeout=5)
        assert unknown_user.status_code == 401
        assert requests.get(exporter.url + "/", verify=verify, timeout=5).status_code == 401
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url, timeout=5)  # the system trust store does not know our CA
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://{exporter.address}/metrics", timeout=5)


def test_client_certificate_required(tmp_path, certificates) -> None:
    config = tmp_path / "web.yml"
    config.write_text(
        "tls_server_config:\n"
        f"  cert_file: {certificates.server_cert}\n"
        f"  key_file: {certificates.server_key}\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        f"  client_ca_file: {certificates.ca_file}\n"
        "http_server_config:\n"
        "  headers:\n"
        "    X-Content-Type-Options: nosniff\n")
    client = (str(certificates.client_cert), str(certificates.client_key))
    verify = str(certificates.ca_file)
    with exporter_process(tmp_path, f"--web.config.file={config}", "--no-collector.gpu",
                          scheme="https", verify=verify, cert=client) as exporter:
        response = requests.get(exporter.url + "/metrics", verify=verify, cert=client, timeout=5)
        assert response.ok and response.headers["X-Content-Type-Options"] == "nosniff"
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            requests.get(exporter.url + "/metrics", verify=verify, timeout=5)


def test_head_is_served_without_a_body(tmp_path) -> None:
    with exporter_process(tmp_path, "--no-collector.gpu", "--no-collector.xid") as exporter:
        for path in ("/", "/metrics", "/nope"):
            head = requests.head(exporter.url + path, timeout=5)
            get = requests.get(exporter.url + path, timeout=5)
            assert head.status_code == get.status_code, path
            assert head.content == b"" and int(head.headers["Content-Length"]) > 0, path
            assert head.headers["Content-Type"] == get.headers["Content-Type"], path


def test_open_connections_are_capped_without_a_thread_each(tmp_path) -> None:
    """2,000 idle clients once made 1,938 threads; now at most --web.max-connections are
    served, the rest wait or are closed, and the exporter answers again once they leave."""
    with exporter_process(tmp_path, "--no-collector.gpu", "--no-collector.xid",
                          "--web.max-connections=8") as exporter:
        assert_idle_clients_get_no_threads(exporter.process.pid, exporter.address, 60, 8)
        response = wait_for(lambda: _get_or_none(exporter.url + "/metrics"), 10, 0.2,
                            "an answer once the idle clients left")
        assert response.status_code == 200
        assert "connections open (--web.max-connections)" in exporter.log()


def _get_or_none(url: str) -> requests.Response | None:
    try:
        return requests.get(url, timeout=2)
    except requests.RequestException:
        return None

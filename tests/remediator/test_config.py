"""`aiinfra-remediator check-config`: exit 0 for a valid file, 2 with "<file>: <key>: <reason>"
for each kind of mistake; and the label matchers rules use."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from remediator.config import ConfigError, load_config
from remediator.matchers import parse_matcher
from scripts.stack import console_script
from tests.support.fuzzing import ALIAS_BOMB, DEEP_YAML
from tests.support.remediator import write_token


@pytest.fixture
def folder(tmp_path):
    write_token(tmp_path / "token")
    (tmp_path / "short").write_text("abc\n")
    program = tmp_path / "fix.sh"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    return tmp_path


def valid() -> dict:
    return {
        "server": {"bearer_token_file": "token"},
        "audit_log": "audit.jsonl",
        "actions": {"fix": {"type": "exec", "command": ["./fix.sh", "{instance}"],
                            "placeholders": {"instance": "instance"}}},
        "rules": [{"name": "fix", "matchers": ['alertname="Broken"'], "action": "fix"}],
    }


def write(folder, config) -> str:
    path = folder / "remediator.yml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def check_config(path: str) -> subprocess.CompletedProcess:
    return subprocess.run([console_script("aiinfra-remediator"), "check-config", path],
                          capture_output=True, text=True, timeout=60, check=False)


def test_check_config_exits_0_for_a_valid_file_and_2_naming_file_key_and_reason(folder):
    good = check_config(write(folder, valid()))
    assert good.returncode == 0, good.stderr
    assert "valid (1 rules, 1 actions, 0 of them dry-run)" in good.stdout
    config = valid()
    config["actions"]["fix"]["command"][1] = "--host={instance}"
    path = write(folder, config)
    bad = check_config(path)
    assert bad.returncode == 2
    assert bad.stderr.startswith(f"invalid: {path}: actions.fix.command[1]: ")
    assert "a placeholder must be a whole argument" in bad.stderr


def test_a_dry_run_action_may_name_a_program_not_installed_yet(folder):
    config = valid()
    config["actions"]["fix"].update(command=["/opt/absent/fix", "{instance}"], dry_run=True)
    result = check_config(write(folder, config))
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stderr and "/opt/absent/fix is not an executable file" in \
        result.stderr


def edit(path: str, value):
    """A function that sets config[path...] = value (None deletes it)."""
    def apply(config):
        *parents, last = path.split(".")
        section = config
        for key in parents:
            section = section[int(key)] if key.isdigit() else section[key]
        if value is None:
            del section[last]
        elif last.isdigit():
            section[int(last)] = value
        else:
            section[last] = value
    return apply


MISTAKES = [
    (edit("rulez", []), "rulez", "unknown key"),
    (edit("server.bearer_token_file", "absent"), "server.bearer_token_file", "cannot read"),
    (edit("server.bearer_token_file", "short"), "server.bearer_token_file",
     "at least 16 characters"),
    (edit("server", None), "server", "is required"),
    (edit("server.listen_address", "10102"), "server.listen_address", "is not HOST:PORT"),
    (edit("audit_log", "no/such/folder/audit.jsonl"), "audit_log", "does not exist"),
    (edit("actions.fix.type", "shell"), "actions.fix.type", "unknown action type 'shell'"),
    (edit("actions.fix.command", "./fix.sh {instance}"), "actions.fix.command",
     "no shell"),
    (edit("actions.fix.command", ["/absent/fix", "{instance}"]), "actions.fix.command[0]",
     "/absent/fix is not an executable file"),
    (edit("actions.fix.command", ["{instance}"]), "actions.fix.command[0]",
     "the program itself cannot be a placeholder"),
    (edit("actions.fix.command", ["./fix.sh", "{instance}", "{gpu}"]),
     "actions.fix.command[2]", "placeholder {gpu} is not declared"),
    (edit("actions.fix.placeholders.gpu", "gpu"), "actions.fix.placeholders.gpu",
     "declared but not used"),
    (edit("actions.fix.placeholders.instance", "in-stance"), "actions.fix.placeholders.instance",
     "must name an alert label"),
    (edit("actions.fix.timeout", "soon"), "actions.fix.timeout", "must be a duration"),
    (edit("actions.fix.shell", True), "actions.fix.shell", "unknown key"),
    (edit("rules", []), "rules", "must be a non-empty list"),
    (edit("rules.0.action", "nope"), "rules.0.action", "action 'nope' is not defined"),
    (edit("rules.0.matchers", ['alertname=~"(unclosed"']), "rules[0].matchers[0]",
     "invalid regular expression"),
    (edit("rules.0.matchers", ["alertname"]), "rules[0].matchers[0]", "is not a matcher"),
    (edit("limits", {"rate_limit": {"max_actions": 0, "window": "1h"}}),
     "limits.rate_limit.max_actions", "must be an integer from 1 to 2147483647"),
    (edit("limits", {"max_concurrent_actions": 10**11}), "limits.max_concurrent_actions",
     "must be an integer from 1 to 2147483647"),
    (edit("limits", {"dedupe_window": float("nan")}), "limits.dedupe_window",
     "must be a finite duration"),
    (edit("actions.fix.timeout", float("inf")), "actions.fix.timeout",
     "must be a finite duration"),
    (edit("actions.fix.cooldown", "293y"), "actions.fix.cooldown", "must be at most 10y"),
    (edit("server.max_connections", 0), "server.max_connections",
     "must be an integer from 1 to 2147483647"),
    (edit("server.web_config_file", 5), "server.web_config_file",
     "must be a non-empty string"),
]


@pytest.mark.parametrize(("change", "key", "reason"), MISTAKES,
                         ids=[f"{key}: {reason}" for _, key, reason in MISTAKES])
def test_each_mistake_names_its_key_and_reason(folder, change, key, reason):
    config = valid()
    change(config)
    path = write(folder, config)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    expected_key = key.replace("rules.0.", "rules[0].")
    assert str(raised.value).startswith(f"{path}: {expected_key}: "), str(raised.value)
    assert reason in str(raised.value)


@pytest.mark.parametrize(("content", "message"), [
    pytest.param(ALIAS_BOMB.encode(), "(file): YAML aliases expand to more than 100,000 nodes",
                 id="alias-bomb"),
    pytest.param(DEEP_YAML.encode(), "(file): not valid YAML: nested deeper than 64 levels",
                 id="1000-deep"),
    pytest.param("audit_log: caf\u00e9\n".encode("latin-1"),
                 "(file): is not UTF-8 text (byte 0xe9", id="latin-1"),
    pytest.param("audit_log: a\n".encode("utf-16"), "(file): is UTF-16 text", id="utf-16"),
])
def test_a_hostile_file_exits_2_without_a_traceback(folder, content, message):
    """The remediator's config goes through the exporter's strict_input, as the sidecar's and
    the web-config do."""
    path = folder / "remediator.yml"
    path.write_bytes(content)
    started = time.monotonic()
    result = check_config(str(path))
    assert time.monotonic() - started < 20
    assert result.returncode == 2, result.stderr
    assert f"{path}: {message}" in result.stderr
    assert "Traceback" not in result.stderr and "lol" not in result.stderr


def test_a_token_file_that_is_not_utf8_text_is_a_config_error(folder):
    (folder / "token").write_bytes(b"\xff" * 32)
    with pytest.raises(ConfigError, match=r": server\.bearer_token_file: .*token: is not UTF-8"):
        load_config(write(folder, valid()))


UNUSABLE_PATHS = {"a NUL byte": ("a\0b", "a path cannot hold a NUL byte"),
                  "a 300-byte name": ("a" * 300, "a file or folder name is at most 255 bytes"),
                  "6,000 characters": ("a/" * 3000, "a path is at most 4096 characters")}
ACTION_WITH_PATH = {
    "command": {"type": "exec", "command": ["./fix.sh"]},
    "systemctl": {"type": "systemd_restart", "unit": "a.service", "allowed_units": ["a.service"]},
    "tls_ca_file": {"type": "http", "url": "http://lb/drain"},
    "header_files": {"type": "http", "url": "http://lb/drain", "header_files": {}},
    "slack_api_url_file": {"type": "notify", "slack_api_url_file": "url", "text": "hi"},
}


@pytest.mark.parametrize("unusable", sorted(UNUSABLE_PATHS))
@pytest.mark.parametrize("key", ["server.bearer_token_file", "server.web_config_file",
                                 "audit_log", "actions.fix.command[0]", "actions.fix.systemctl",
                                 "actions.fix.tls_ca_file", "actions.fix.header_files.Auth",
                                 "actions.fix.slack_api_url_file"])
def test_a_path_the_os_cannot_take_is_a_config_error(folder, key, unusable):
    """Once a traceback (ValueError: embedded null byte, OSError: File name too long)."""
    value, reason = UNUSABLE_PATHS[unusable]
    config = valid()
    if key.startswith("actions.fix."):
        name = key.split(".")[2].split("[")[0]
        config["actions"]["fix"] = json.loads(json.dumps(ACTION_WITH_PATH[name]))
    *parents, last = key.removesuffix("[0]").split(".")
    section = config
    for part in parents:
        section = section.setdefault(part, {})
    if key.endswith("[0]"):
        section[last][0] = value
    else:
        section[last] = value
    with pytest.raises(ConfigError) as raised:
        load_config(write(folder, config))
    assert str(raised.value).startswith(f"{folder / 'remediator.yml'}: {key}: "), raised.value
    assert reason in str(raised.value)


@pytest.mark.parametrize(("section", "key", "reason"), [
    ({"type": "systemd_restart", "unit": "other.service", "allowed_units": ["vllm.service"]},
     "actions.fix.unit", "'other.service' is not in allowed_units"),
    ({"type": "systemd_restart", "unit": "vllm.service"}, "actions.fix.allowed_units",
     "must be a non-empty list"),
    ({"type": "http", "url": "http://{host}/failover", "placeholders": {"host": "instance"}},
     "actions.fix.url", "the host cannot come from a placeholder"),
    ({"type": "http", "url": "ftp://lb/failover"}, "actions.fix.url", "must be an http://"),
    ({"type": "http", "url": "http://lb/x", "method": "TRACE"}, "actions.fix.method",
     "must be one of"),
    ({"type": "notify", "text": "hi"}, "actions.fix.slack_api_url_file", "is required"),
    ({"type": "notify", "slack_api_url_file": "url", "text": "{who}"}, "actions.fix.text",
     "placeholder {who} is not declared"),
])
def test_action_type_keys_are_checked(folder, section, key, reason):
    config = valid()
    config["actions"]["fix"] = section
    with pytest.raises(ConfigError, match=rf"^.*: {key.replace('.', '[.]')}: .*{reason}"):
        load_config(write(folder, config))


def test_a_bad_web_config_is_reported_by_the_exporters_loader(folder):
    (folder / "web.yml").write_text("basic_auth_users:\n  prometheus: not-a-hash\n")
    config = valid()
    config["server"]["web_config_file"] = "web.yml"
    result = check_config(write(folder, config))
    assert result.returncode == 2
    assert "web.yml: basic_auth_users.prometheus: not a bcrypt hash" in result.stderr


@pytest.mark.parametrize(("text", "labels", "matches"), [
    ('alertname="GpuLost"', {"alertname": "GpuLost"}, True),
    ('alertname="GpuLost"', {"alertname": "GpuLostX"}, False),
    ("severity!=info", {"severity": "critical"}, True),
    ("severity!=info", {}, True),
    ('instance=~"gpu-.*"', {"instance": "gpu-7:10100"}, True),
    ('instance=~"gpu-.*"', {"instance": "cpu-gpu-7"}, False),  # anchored, as in Alertmanager
    ('instance!~"gpu-.*"', {"instance": "cpu-1"}, True),
    ('team=""', {}, True),  # a missing label is the empty string
    ('summary="say \\"hi\\"\\n"', {"summary": 'say "hi"\n'}, True),
])
def test_matchers_follow_alertmanager(text, labels, matches):
    assert parse_matcher(text).matches(labels) is matches


def test_the_readme_config_is_valid(tmp_path):
    """The README's example, verbatim, with its secrets made (a dry run: its programs are
    examples, not installed here)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Remediator", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "secrets").mkdir()
    write_token(tmp_path / "secrets" / "remediator_token")
    path = tmp_path / "remediator.yml"
    path.write_text(block)
    result = subprocess.run([console_script("aiinfra-remediator"), "check-config", "--dry-run",
                             str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "valid (4 rules, 4 actions, 4 of them dry-run)" in result.stdout
    config = load_config(path, force_dry_run=True)
    assert {action.type for action in config.actions.values()} == {
        "exec", "systemd_restart", "http", "notify"}

"""Property-based: any remediator config loads or raises ConfigError, within the time bound, as
the sidecar's config and the exporter's web-config do (all three read through strict_input)."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from remediator.config import ConfigError, RemediatorConfig, load_config
from tests.support.fuzzing import FUZZ, json_values, load_file, raw_bytes, scalars
from tests.support.remediator import write_script, write_token

FUZZ_CONFIG = settings(FUZZ, max_examples=1000)
EDGES = ["exec", "systemd_restart", "http", "notify", "shell", "", "a\0b", "a" * 300,
         "/" + "a/" * 3000, "{instance}", "-x", "http://{instance}/", "instance"]
"""Action types, and values a path, a URL or a placeholder must survive."""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Absolute paths for the token, the audit log and a program: each example is written to
    a fresh folder by load_file, so relative ones would never get past `server`."""
    root = tmp_path_factory.mktemp("fuzz")
    write_token(root / "token")
    write_script(root, "fix", "print('fixed')\n")
    return root


def valid(folder) -> dict:
    """One action of each type, so every type's keys are reached by the mutations."""
    return {
        "server": {"bearer_token_file": str(folder / "token"), "max_body_bytes": 4096},
        "audit_log": str(folder / "audit.jsonl"),
        "limits": {"max_concurrent_actions": 2, "rate_limit": {"max_actions": 5, "window": "1h"},
                   "dedupe_window": "1d"},
        "actions": {
            "fix": {"type": "exec", "command": [str(folder / "fix"), "{instance}"],
                    "placeholders": {"instance": "instance"}, "env": {"A": "b"},
                    "timeout": "5s", "cooldown": "1m"},
            "restart": {"type": "systemd_restart", "unit": "a.service",
                        "allowed_units": ["a.service"], "dry_run": True},
            "drain": {"type": "http", "url": "http://lb/drain/{instance}",
                      "placeholders": {"instance": "instance"}, "body": {"why": "x"},
                      "header_files": {"Authorization": "lb_token"}},
            "tell": {"type": "notify", "slack_api_url_file": "slack_url", "text": "{alertname}",
                     "placeholders": {"alertname": "alertname"}},
        },
        "rules": [{"name": name, "matchers": ['alertname="Broken"'], "action": name}
                  for name in ("fix", "restart", "drain", "tell")],
    }


def key_paths(document: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path of nested mappings and lists (list items by index)."""
    found = [prefix] if prefix else []
    items = (document.items() if isinstance(document, dict)
             else enumerate(document) if isinstance(document, list) else [])
    for key, value in items:
        found += key_paths(value, (*prefix, key))
    return found


def mutated(data: st.DataObject, document: dict) -> bytes:
    """document with one to three values replaced by arbitrary ones."""
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(key_paths(document)))
        target = document
        for key in path[:-1]:
            target = target[key]
        if isinstance(target, dict | list):
            target[path[-1]] = data.draw(st.one_of(st.sampled_from(EDGES), json_values,
                                                   st.lists(scalars, max_size=3)))
    return yaml.safe_dump(document).encode()


def test_the_base_of_the_mutations_is_valid(folder) -> None:
    path = folder / "base.yml"
    path.write_text(yaml.safe_dump(valid(folder)))
    assert set(load_config(path).actions) == {"fix", "restart", "drain", "tell"}


@FUZZ_CONFIG
@given(data=st.data())
def test_any_remediator_config_loads_or_raises_config_error(folder, data) -> None:
    kind = data.draw(st.sampled_from(["mutated", "mutated", "mutated", "document", "bytes"]))
    if kind == "mutated":
        content = mutated(data, valid(folder))
    elif kind == "document":
        content = yaml.safe_dump(data.draw(json_values)).encode()
    else:
        content = data.draw(raw_bytes)
    config = load_file(content, "remediator.yml", load_config, ConfigError)
    assert config is None or isinstance(config, RemediatorConfig)

"""A real Alertmanager delivering to real remediators: each safety property of the issue, with
Alertmanager's own re-sends (group_interval and repeat_interval of 1s) and its real token
handling (http_config.authorization.credentials_file).

One Alertmanager routes by a `scenario` label to three remediators (the main one, a dry-run one
and one with a rate limit of 2 per hour) and, for the token tests, to the main one with a wrong
token and with none. Every alert is its own group (group_by: ['...']).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import yaml

from tests.support.remediator import (
    HANG_SCRIPT,
    RECORD_SCRIPT,
    pid_gone,
    post_to_alertmanager,
    read_lines,
    remediator,
    write_script,
    write_token,
)
from tests.support.services import alertmanager, wait_for

DELIVERY_SECONDS = 20  # Alertmanager delivers in ~1 s here; room for a loaded CI machine


def record_action(script, record_file, cooldown="0s", arguments=("{scenario}", "{payload}")):
    """An exec action running the record script with labels as arguments."""
    return {"type": "exec", "command": [str(script), *arguments],
            "placeholders": {argument.strip("{}"): argument.strip("{}") for argument in arguments},
            "env": {"RECORD_FILE": str(record_file)}, "cooldown": cooldown}


def receiver(name, url, token_file=None):
    config = {"url": url, "send_resolved": True}
    if token_file is not None:
        config["http_config"] = {"authorization": {"type": "Bearer",
                                                   "credentials_file": str(token_file)}}
    return {"name": name, "webhook_configs": [config]}


@pytest.fixture(scope="module")
def delivery(tmp_path_factory):
    root = tmp_path_factory.mktemp("delivery")
    record = write_script(root / "bin", "record", RECORD_SCRIPT)
    hang = write_script(root / "bin", "hang", HANG_SCRIPT)
    files = {name: root / f"{name}.out" for name in ("main", "dry", "limited")}
    main_config = {
        "actions": {
            "record": record_action(record, files["main"]),
            "record-with-cooldown": record_action(record, files["main"], cooldown="1h",
                                                  arguments=("{scenario}", "{instance}")),
            "hang": {"type": "exec", "command": [str(hang)], "timeout": "1s",
                     "env": {"PIDS_FILE": str(root / "hang.pids")}},
        },
        "rules": [
            {"name": "hang", "matchers": ['scenario="hang"'], "action": "hang"},
            {"name": "cooldown", "matchers": ['scenario="cooldown"'],
             "action": "record-with-cooldown"},
            {"name": "record", "matchers": ['scenario=~"once|hostile|wrong_token|no_token"',
                                            'severity="critical"'], "action": "record"},
        ],
    }
    plain_rules = [{"name": "record", "matchers": ['severity="critical"'], "action": "record"}]
    dry_config = {"actions": {"record": record_action(record, files["dry"])},
                  "rules": plain_rules}
    limited_config = {"actions": {"record": record_action(record, files["limited"])},
                      "rules": plain_rules,
                      "limits": {"rate_limit": {"max_actions": 2, "window": "1h"}}}
    wrong_token = root / "wrong_token"
    write_token(wrong_token)
    with remediator(root / "main", main_config) as main, \
            remediator(root / "dry", dry_config, extra_args=["--dry-run"]) as dry, \
            remediator(root / "limited", limited_config) as limited:
        routes = [("wrong_token", main, wrong_token), ("no_token", main, None),
                  ("dry_run", dry, dry.token_file), ("rate_limit", limited, limited.token_file)]
        am_config = {
            "route": {"receiver": "main", "group_by": ["..."], "group_wait": "1s",
                      "group_interval": "1s", "repeat_interval": "1s",
                      "routes": [{"matchers": [f'scenario="{name}"'], "receiver": name}
                                 for name, _, _ in routes]},
            "receivers": [receiver("main", f"{main.url}/alerts", main.token_file),
                          *(receiver(name, f"{target.url}/alerts", token)
                            for name, target, token in routes)],
        }
        with alertmanager(root / "am", yaml.safe_dump(am_config)) as am:
            yield {"am": am, "main": main, "dry": dry, "limited": limited, "files": files,
                   "root": root, "started": datetime.now(UTC) - timedelta(minutes=1)}


def fire(delivery, resolved=False, **labels):
    post_to_alertmanager(delivery["am"].url, {"alertname": "TestRemediation",
                                              "severity": "critical", "payload": "plain",
                                              **labels}, delivery["started"], resolved)


def test_a_critical_alert_acts_once_although_alertmanager_resends_it_then_resolves(delivery):
    main = delivery["main"]
    fire(delivery, scenario="once")
    wait_for(lambda: len(main.records("skipped", scenario="once")) >= 2, DELIVERY_SECONDS,
             message="two re-sends of the firing alert")
    assert [line for line in read_lines(delivery["files"]["main"]) if line[0] == "once"] == \
        [["once", "plain"]]
    (started,) = main.records("started", scenario="once")
    assert {r["reason"] for r in main.records("skipped", scenario="once")} == {"duplicate"}
    finished = wait_for(lambda: main.records("finished", scenario="once"), DELIVERY_SECONDS)
    assert finished[0]["run_id"] == started["run_id"]
    assert finished[0]["result"] == "success" and finished[0]["exit_code"] == 0

    fire(delivery, resolved=True, scenario="once")
    wait_for(lambda: [r for r in main.records("skipped", scenario="once")
                      if r["reason"] == "resolved"], DELIVERY_SECONDS,
             message="the resolved notification")
    assert len([line for line in read_lines(delivery["files"]["main"])
                if line[0] == "once"]) == 1
    assert len(main.records("started", scenario="once")) == 1


@pytest.mark.parametrize("scenario", ["wrong_token", "no_token"])
def test_a_wrong_or_missing_token_gets_401_and_runs_nothing(delivery, scenario):
    main = delivery["main"]
    before = len(main.records("rejected"))
    fire(delivery, scenario=scenario)
    wait_for(lambda: len(main.records("rejected")) >= before + 2, DELIVERY_SECONDS,
             message="Alertmanager's deliveries refused")
    new = main.records("rejected")[before:]
    assert {(r["reason"], r["http_status"]) for r in new} == {("unauthorized", 401)}
    assert main.records(scenario=scenario) == []
    assert [line for line in read_lines(delivery["files"]["main"]) if line[0] == scenario] == []
    assert main.post({"version": "4"}, token=None).status_code == 401
    assert main.post({"version": "4"}, token="wrong-token-of-enough-length").status_code == 401
    assert 'aiinfra_remediation_rejected_total{reason="unauthorized"}' in main.metrics_text()


HOSTILE = {"semicolon": "; rm -rf /", "substitution": "$(touch {marker})",
           "newline": "first line\nsecond line"}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_label_values_reach_the_action_as_one_inert_argument(delivery, kind):
    marker = delivery["root"] / f"pwned-{kind}"
    value = HOSTILE[kind].format(marker=marker)
    fire(delivery, scenario="hostile", payload=value)
    main = delivery["main"]
    wait_for(lambda: main.records("finished", scenario="hostile", payload=value),
             DELIVERY_SECONDS, message="the action's result")
    assert ["hostile", value] in read_lines(delivery["files"]["main"])
    assert not marker.exists()
    (started,) = main.records("started", scenario="hostile", payload=value)
    assert started["invocation"]["argv"][1:] == ["hostile", value]


def test_cooldown_holds_for_the_same_target_but_not_another(delivery):
    main = delivery["main"]
    fire(delivery, scenario="cooldown", instance="node-a", n="1")
    wait_for(lambda: main.records("started", scenario="cooldown"), DELIVERY_SECONDS)
    fire(delivery, scenario="cooldown", instance="node-a", n="2")
    fire(delivery, scenario="cooldown", instance="node-b", n="3")
    # "finished", not "started": the action writes its file while it runs
    wait_for(lambda: main.records("skipped", scenario="cooldown", n="2")
             and main.records("finished", scenario="cooldown", n="3"), DELIVERY_SECONDS)
    assert {r["reason"] for r in main.records("skipped", scenario="cooldown", n="2")} == \
        {"cooldown"}
    ran = sorted(line for line in read_lines(delivery["files"]["main"]) if line[0] == "cooldown")
    assert ran == [["cooldown", "node-a"], ["cooldown", "node-b"]]


def test_the_global_rate_limit_holds(delivery):
    limited = delivery["limited"]
    for number in range(4):
        fire(delivery, scenario="rate_limit", n=str(number))
    wait_for(lambda: len({r["labels"]["n"] for r in limited.records("skipped")
                          if r["reason"] == "rate_limited"}) == 2, DELIVERY_SECONDS,
             message="two alerts held back by the rate limit")
    wait_for(lambda: len(limited.records("skipped")) >= 6, DELIVERY_SECONDS,
             message="re-sends of the held-back alerts")
    assert len(limited.records("started")) == 2
    assert len(read_lines(delivery["files"]["limited"])) == 2
    assert 'aiinfra_remediation_rejected_total{reason="rate_limited"}' in limited.metrics_text()


def test_dry_run_acts_on_nothing_and_logs_what_it_would_have_done(delivery):
    dry = delivery["dry"]
    fire(delivery, scenario="dry_run", payload="would-run")
    (record,) = wait_for(lambda: dry.records("dry_run", scenario="dry_run"), DELIVERY_SECONDS)
    assert record["invocation"]["argv"][1:] == ["dry_run", "would-run"]
    assert record["action"] == "record" and record["rule"] == "record"
    wait_for(lambda: dry.records("skipped", scenario="dry_run"), DELIVERY_SECONDS,
             message="a re-send, deduplicated as a real action would be")
    assert read_lines(delivery["files"]["dry"]) == []
    assert dry.records("started") == []
    assert ('aiinfra_remediation_actions_total{action="record",result="dry_run"} 1.0'
            in dry.metrics_text())


def test_a_hung_action_is_killed_with_its_children_at_its_timeout(delivery):
    main = delivery["main"]
    fire(delivery, scenario="hang")
    (finished,) = wait_for(lambda: main.records("finished", scenario="hang"),
                           DELIVERY_SECONDS + 5, message="the hung action's result")
    assert finished["result"] == "timeout"
    assert finished["exit_code"] is None
    # 1 s timeout, SIGTERM (ignored by the script), SIGKILL after the 2 s grace period.
    assert 3.0 <= finished["duration_seconds"] < 6.0
    assert "hanging" in finished["output"]
    pids = [int(pid) for pid in (delivery["root"] / "hang.pids").read_text().split()]
    wait_for(lambda: all(pid_gone(pid) for pid in pids), 5, message="script and child gone")
    assert 'aiinfra_remediation_actions_total{action="hang",result="timeout"} 1.0' in \
        main.metrics_text()


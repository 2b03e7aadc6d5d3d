"""Every PromQL expression shipped (rules and dashboards) parses in a real Prometheus."""

from __future__ import annotations

import pytest
import requests

from tests.alerting.shipped import all_rules, as_plain_promql, dashboard_queries, dashboards
from tests.support.services import prometheus, scrape_config


def shipped_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every rule and every dashboard query."""
    found = [(rule.get("alert") or rule["record"], rule["expr"]) for rule in all_rules()]
    for file_name, dashboard in dashboards().items():
        found += [(file_name, as_plain_promql(query)) for query in dashboard_queries(dashboard)]
    return found


@pytest.fixture(scope="module")
def running_prometheus(tmp_path_factory):
    with prometheus(tmp_path_factory.mktemp("promql"), scrape_config({})) as service:
        yield service


def test_every_expression_is_collected():
    """Guards the test below against passing vacuously on an empty list."""
    expressions = shipped_expressions()
    assert len(expressions) >= 40
    # Grafana's $variables must all be replaced; rules may use label_replace's "$1".
    assert all("$" not in promql for where, promql in expressions if where.endswith(".json"))


def test_prometheus_accepts_every_shipped_expression(running_prometheus):
    rejected = {}
    for where, promql in shipped_expressions():
        response = requests.get(f"{running_prometheus.url}/api/v1/query",
                                params={"query": promql}, timeout=10)
        body = response.json()
        if body["status"] != "success":
            rejected[f"{where}: {promql}"] = body.get("error")
    assert rejected == {}


def test_a_broken_expression_is_rejected(running_prometheus):
    """The check above can fail: Prometheus answers a parse error for bad PromQL."""
    response = requests.get(f"{running_prometheus.url}/api/v1/query",
                            params={"query": "min without (model_alias (anomaly_score) >= 1"},
                            timeout=10)
    assert response.json()["status"] == "error"
    assert response.json()["errorType"] == "bad_data"

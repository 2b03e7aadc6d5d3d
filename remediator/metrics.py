"""The remediator's own metrics, scraped from /metrics like the exporter's.

Every action and result label pair, and every rejection reason, is created at start with 0, so
`increase(...)` sees the first event and alert rules need no `or vector(0)`.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from remediator import __version__

RESULTS = ("success", "failure", "timeout", "error", "dry_run")
REJECTION_REASONS = ("unauthorized", "payload_too_large", "length_required", "invalid_payload",
                     "unsupported_media_type", "cooldown", "rate_limited", "concurrency_limit",
                     "missing_label", "unsafe_label_value", "unit_not_allowed")
SKIP_REASONS = ("resolved", "no_matching_rule", "duplicate")
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class RemediatorMetrics:
    def __init__(self, action_names: Iterable[str]) -> None:
        self.registry = CollectorRegistry()
        self.actions = Counter("aiinfra_remediation_actions", "Actions run (or, with result "
                               "dry_run, that would have run), by result.", ["action", "result"],
                               registry=self.registry)
        self.duration = Histogram("aiinfra_remediation_action_duration_seconds",
                                  "How long actions took, up to their timeout.", ["action"],
                                  buckets=DURATION_BUCKETS, registry=self.registry)
        self.rejected = Counter("aiinfra_remediation_rejected", "Requests refused (bad token, "
                                "bad payload) and actions held back by a safety limit, by "
                                "reason.", ["reason"], registry=self.registry)
        self.skipped = Counter("aiinfra_remediation_skipped", "Alerts with nothing to do "
                               "(resolved, no rule matches, already acted on), by reason.",
                               ["reason"], registry=self.registry)
        self.alerts_received = Counter("aiinfra_remediation_alerts_received", "Alerts received "
                                       "in authenticated, valid notifications, by status.",
                                       ["status"], registry=self.registry)
        self.running = Gauge("aiinfra_remediation_actions_running", "Actions running now.",
                             registry=self.registry)
        self.audit_errors = Counter("aiinfra_remediation_audit_write_errors", "Audit lines that "
                                    "could not be written (no action starts without one).",
                                    registry=self.registry)
        Gauge("aiinfra_remediation_build_info", "Version of the remediator.", ["version"],
              registry=self.registry).labels(version=__version__).set(1)
        for name in action_names:
            self.duration.labels(action=name)
            for result in RESULTS:
                self.actions.labels(action=name, result=result)
        for reason in REJECTION_REASONS:
            self.rejected.labels(reason=reason)
        for reason in SKIP_REASONS:
            self.skipped.labels(reason=reason)
        for status in ("firing", "resolved"):
            self.alerts_received.labels(status=status)

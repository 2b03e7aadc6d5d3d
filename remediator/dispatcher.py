"""From a validated notification to decisions, audit lines and running actions.

For each alert: resolved alerts and alerts no rule matches are skipped; for each matching rule,
the action's placeholders are filled from the labels and rendered (a value the action cannot use
safely is refused), the safety limits are checked and reserved, the decision is written to the
audit log, and only then does the action start, on a bounded pool of worker threads. The
webhook answers as soon as the decisions are on disk; results are audited when actions end.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from remediator.actions.base import ActionRefused, Outcome
from remediator.audit import AuditLog, read_records
from remediator.config import ActionConfig, RemediatorConfig, Rule
from remediator.limits import Reservation, SafetyLimits
from remediator.matchers import all_match
from remediator.metrics import SKIP_REASONS, RemediatorMetrics
from remediator.payload import Alert, Notification
from remediator.placeholders import values_from_labels

LOG = logging.getLogger("remediator")
# Refused requests are audited up to this many per minute; the rest are only counted, so a
# client hammering the port with bad tokens cannot fill the disk through the audit log.
REJECTED_AUDIT_PER_MINUTE = 60


class AuditUnavailable(RuntimeError):
    """A decision could not be written to the audit log, so nothing was started (the webhook
    answers 500 and Alertmanager retries)."""


class Dispatcher:
    def __init__(self, config: RemediatorConfig, audit: AuditLog, metrics: RemediatorMetrics,
                 limits: SafetyLimits) -> None:
        self.config = config
        self.audit = audit
        self.metrics = metrics
        self.limits = limits
        self.pool = ThreadPoolExecutor(max_workers=config.limits.max_concurrent_actions,
                                       thread_name_prefix="action")
        self._rejections_lock = threading.Lock()
        self._rejections_window: list[float] = []
        self._rejections_suppressed = 0

    def restore_state(self) -> int:
        """Rebuild the limits from the audit log's `started` lines, if the log exists."""
        if not self.config.audit_log.exists():
            return 0
        horizon = time.time() - max(self.config.limits.dedupe_window_seconds,
                                    self.config.limits.rate_limit_window_seconds,
                                    *(action.cooldown_seconds
                                      for action in self.config.actions.values()))
        started = (record for record in read_records(self.config.audit_log, since=horizon)
                   if record.get("event") == "started")
        return self.limits.restore(started, {name: action.cooldown_seconds
                                             for name, action in self.config.actions.items()})

    def handle(self, notification: Notification) -> dict[str, int]:
        """Decide for every alert; returns counts of decisions (for the webhook's answer)."""
        counts: dict[str, int] = {}
        for alert in notification.alerts:
            self.metrics.alerts_received.labels(status=alert.status).inc()
            for decision in self._decide_alert(alert):
                counts[decision] = counts.get(decision, 0) + 1
        return counts

    def reject_request(self, reason: str, http_status: int, client: str, detail: str) -> None:
        """A request refused before its alerts were read: counted, and audited within limits."""
        self.metrics.rejected.labels(reason=reason).inc()
        with self._rejections_lock:
            now = time.monotonic()
            self._rejections_window = [t for t in self._rejections_window if t > now - 60]
            if len(self._rejections_window) >= REJECTED_AUDIT_PER_MINUTE:
                self._rejections_suppressed += 1
                return
            self._rejections_window.append(now)
            suppressed, self._rejections_suppressed = self._rejections_suppressed, 0
        record = {"event": "rejected", "reason": reason, "http_status": http_status,
                  "client": client, "detail": detail}
        if suppressed:
            record["suppressed_before"] = suppressed
        self._write(record)

    def close(self) -> None:
        """Wait for running actions (each is bounded by its timeout)."""
        self.pool.shutdown(wait=True)

    def _decide_alert(self, alert: Alert) -> list[str]:
        if alert.status != "firing":
            return [self._skip(alert, None, "resolved", "only firing alerts act")]
        rules = [rule for rule in self.config.rules if all_match(rule.matchers, alert.labels)]
        if not rules:
            return [self._skip(alert, None, "no_matching_rule", "no rule matches its labels")]
        return [self._decide_rule(alert, rule) for rule in rules]

    def _decide_rule(self, alert: Alert, rule: Rule) -> str:
        action = self.config.actions[rule.action]
        values, missing = values_from_labels(action.placeholders, alert.labels)
        if missing:
            return self._skip(alert, rule, "missing_label",
                              f"the alert has no label {', '.join(missing)}")
        try:
            invocation = action.action.render(values)
        except ActionRefused as refusal:
            return self._skip(alert, rule, refusal.reason, refusal.detail)
        dedupe_key = json.dumps([rule.name, alert.fingerprint, alert.starts_at_text])
        cooldown_key = json.dumps([action.name, sorted(values.items())])
        reservation = self.limits.reserve(dedupe_key, cooldown_key, action.cooldown_seconds,
                                          runs=not action.dry_run)
        if isinstance(reservation, str):
            return self._skip(alert, rule, reservation, self._limit_detail(reservation, action))
        alert_fields = self._alert_fields(alert, rule)
        base = {**alert_fields, "invocation": invocation,
                "dedupe_key": dedupe_key, "cooldown_key": cooldown_key}
        if action.dry_run:
            self._write_or_cancel({"event": "dry_run", **base}, reservation)
            self.metrics.actions.labels(action=action.name, result="dry_run").inc()
            return "dry_run"
        run_id = uuid.uuid4().hex[:16]
        self._write_or_cancel({"event": "started", "run_id": run_id, **base}, reservation)
        self.metrics.running.inc()
        self.pool.submit(self._run, action, invocation, run_id, reservation, alert_fields)
        return "started"

    def _run(self, action: ActionConfig, invocation: dict[str, Any], run_id: str,
             reservation: Reservation, alert_fields: dict[str, Any]) -> None:
        started = time.monotonic()
        try:
            outcome = action.action.execute(invocation, action.timeout_seconds)
        except Exception as error:  # an action's bug must not kill the worker or skip the audit
            LOG.exception("action %s failed", action.name)
            outcome = Outcome("error", {"output": f"{type(error).__name__}: {error}"})
        duration = time.monotonic() - started
        self.limits.release(reservation)
        self.metrics.running.dec()
        self.metrics.actions.labels(action=action.name, result=outcome.result).inc()
        self.metrics.duration.labels(action=action.name).observe(duration)
        LOG.info("action %s (%s) for %s: %s in %.2fs", action.name, run_id,
                 alert_fields["alertname"], outcome.result, duration)
        try:
            self._write({"event": "finished", "run_id": run_id, **alert_fields,
                         "result": outcome.result, **outcome.details,
                         "duration_seconds": round(duration, 3)})
        except AuditUnavailable:
            LOG.error("the result of %s could not be audited", run_id)

    def _skip(self, alert: Alert, rule: Rule | None, reason: str, detail: str) -> str:
        if reason in SKIP_REASONS:
            self.metrics.skipped.labels(reason=reason).inc()
        else:
            self.metrics.rejected.labels(reason=reason).inc()
        self._write({"event": "skipped", **self._alert_fields(alert, rule), "reason": reason,
                     "detail": detail})
        return reason

    def _limit_detail(self, reason: str, action: ActionConfig) -> str:
        limits = self.config.limits
        return {
            "duplicate": "this firing (fingerprint, startsAt) already acted",
            "cooldown": f"{action.name} ran for the same target within its cooldown "
                        f"({action.cooldown_seconds:g}s)",
            "rate_limited": f"{limits.rate_limit_actions} actions within "
                            f"{limits.rate_limit_window_seconds:g}s already",
            "concurrency_limit": f"{limits.max_concurrent_actions} actions are running",
        }[reason]

    def _alert_fields(self, alert: Alert, rule: Rule | None) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "alertname": alert.alertname, "fingerprint": alert.fingerprint,
            "starts_at": alert.starts_at_text, "status": alert.status, "labels": alert.labels}
        if rule is not None:
            action = self.config.actions[rule.action]
            fields.update(rule=rule.name, action=action.name, action_type=action.type)
        return fields

    def _write_or_cancel(self, record: dict[str, Any], reservation: Reservation) -> None:
        try:
            self._write(record)
        except AuditUnavailable:
            self.limits.cancel(reservation)
            raise

    def _write(self, record: dict[str, Any]) -> None:
        try:
            self.audit.write(record)
        except OSError as error:
            self.metrics.audit_errors.inc()
            LOG.error("cannot write the audit log %s: %s", self.audit.path, error)
            raise AuditUnavailable(str(error)) from error


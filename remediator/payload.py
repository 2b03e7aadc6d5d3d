"""Strict parsing of Alertmanager's webhook payload (version 4).

Anything the remediator acts on comes from this payload, so every field it reads is checked for
presence and type before anything else looks at it: the version, each alert's status, labels
(valid names, string values), annotations, an RFC 3339 startsAt and a hex fingerprint. Fields
this module does not read are ignored, because Alertmanager adds fields within version 4 (0.25
added truncatedAlerts).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from remediator.matchers import LABEL_NAME

PAYLOAD_VERSION = "4"
MAX_ALERTS = 1000
STATUSES = ("firing", "resolved")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{8,64}$")


class PayloadError(ValueError):
    """The body is not a valid version-4 notification; str() names the field at fault."""


@dataclass(frozen=True)
class Alert:
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    fingerprint: str

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def starts_at_text(self) -> str:
        """startsAt normalised to UTC, the form the audit log and the dedupe key use."""
        return self.starts_at.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Notification:
    receiver: str
    status: str
    group_key: str
    alerts: tuple[Alert, ...]


def parse_notification(body: bytes) -> Notification:
    """The notification in body; PayloadError naming the first field at fault."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PayloadError(f"body is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise PayloadError("body must be a JSON object")
    version = document.get("version")
    if version != PAYLOAD_VERSION:
        raise PayloadError(f"version: expected {PAYLOAD_VERSION!r}, got {version!r}")
    alerts = document.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("alerts: must be a list")
    if len(alerts) > MAX_ALERTS:
        raise PayloadError(f"alerts: {len(alerts)} alerts, at most {MAX_ALERTS} accepted")
    return Notification(
        receiver=_string(document, "receiver", "receiver"),
        status=_status(document, "status"),
        group_key=_string(document, "groupKey", "groupKey"),
        alerts=tuple(_alert(alert, f"alerts[{index}]") for index, alert in enumerate(alerts)),
    )


def _alert(raw: Any, where: str) -> Alert:
    if not isinstance(raw, dict):
        raise PayloadError(f"{where}: must be an object")
    labels = _label_set(raw.get("labels"), f"{where}.labels", names_checked=True)
    if not labels.get("alertname"):
        raise PayloadError(f"{where}.labels.alertname: required")
    fingerprint = _string(raw, "fingerprint", f"{where}.fingerprint")
    if not _FINGERPRINT.match(fingerprint):
        raise PayloadError(f"{where}.fingerprint: not a hex fingerprint: {fingerprint!r}")
    return Alert(
        status=_status(raw, where + ".status"),
        labels=labels,
        annotations=_label_set(raw.get("annotations", {}), f"{where}.annotations",
                               names_checked=False),
        starts_at=_timestamp(_string(raw, "startsAt", f"{where}.startsAt"), f"{where}.startsAt"),
        fingerprint=fingerprint,
    )


def _string(document: dict, key: str, where: str) -> str:
    value = document.get(key)
    if not isinstance(value, str):
        raise PayloadError(f"{where}: must be a string, got {type(value).__name__}")
    return value


def _status(document: dict, where: str) -> str:
    value = document.get("status")
    if value not in STATUSES:
        raise PayloadError(f"{where}: must be firing or resolved, got {value!r}")
    return value


def _label_set(raw: Any, where: str, names_checked: bool) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise PayloadError(f"{where}: must be an object of strings")
    for name, value in raw.items():
        if names_checked and not LABEL_NAME.match(name):
            raise PayloadError(f"{where}: invalid label name {name!r}")
        if not isinstance(value, str):
            raise PayloadError(f"{where}.{name}: must be a string, got {type(value).__name__}")
    return dict(raw)


def _timestamp(text: str, where: str) -> datetime:
    if not _RFC3339.match(text):
        raise PayloadError(f"{where}: not an RFC 3339 timestamp: {text!r}")
    try:
        return datetime.fromisoformat(text)
    except ValueError as error:
        raise PayloadError(f"{where}: {error}") from None

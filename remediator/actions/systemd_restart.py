"""`type: systemd_restart`: `systemctl restart UNIT` for a unit on an allowlist.

The unit may be built from placeholders (`inference@{instance}.service`), but the result must be
one of `allowed_units` exactly, so a label can only ever pick among the units the operator
listed.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from remediator import placeholders
from remediator.actions.base import (
    Action,
    ActionRefused,
    LoadContext,
    Outcome,
    require_declared,
)
from remediator.actions.exec import resolve_executable, run_argv


@dataclass(frozen=True)
class SystemdRestartAction(Action):
    keys: ClassVar[tuple[str, ...]] = ("unit", "allowed_units", "systemctl")

    unit: str
    allowed_units: frozenset[str]
    systemctl: str

    @classmethod
    def from_config(cls, section: dict, context: LoadContext) -> SystemdRestartAction:
        checker, prefix = context.checker, context.prefix
        unit = section.get("unit")
        if not isinstance(unit, str) or not unit:
            raise checker.fail(f"{prefix}.unit", "is required: the unit to restart, e.g. "
                                                 "vllm.service or inference@{instance}.service")
        require_declared(context, f"{prefix}.unit", unit)
        allowed = section.get("allowed_units")
        if (not isinstance(allowed, list) or not allowed
                or not all(isinstance(name, str) and name for name in allowed)):
            raise checker.fail(f"{prefix}.allowed_units",
                               "must be a non-empty list of unit names")
        if not placeholders.names_in(unit) and unit not in allowed:
            raise checker.fail(f"{prefix}.unit", f"{unit!r} is not in allowed_units")
        systemctl = section.get("systemctl") or shutil.which("systemctl") or "/usr/bin/systemctl"
        if not isinstance(systemctl, str):
            raise checker.fail(f"{prefix}.systemctl", "must be a path")
        systemctl = resolve_executable(context, f"{prefix}.systemctl", systemctl)
        return cls(unit, frozenset(allowed), systemctl)

    def render(self, values: Mapping[str, str]) -> dict[str, Any]:
        unit = placeholders.fill(self.unit, values)
        if unit not in self.allowed_units:
            raise ActionRefused("unit_not_allowed", f"unit {unit!r} is not in allowed_units")
        return {"argv": [self.systemctl, "--no-ask-password", "restart", "--", unit]}

    def execute(self, invocation: dict[str, Any], timeout_seconds: float) -> Outcome:
        return run_argv(invocation["argv"], timeout_seconds)


ACTION_CLASS = SystemdRestartAction

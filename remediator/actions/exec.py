"""`type: exec`: a fixed argv from the config, run without a shell.

A placeholder may only be a whole argv item (`"{instance}"`, never `"--host={instance}"`), so a
label value always arrives as exactly one argument, byte for byte: `; rm -rf /`, `$(...)` or a
newline are just characters in it. A value that starts with `-` is refused, since the program
would read it as an option.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from exporter.strict_input import path_string
from remediator import placeholders
from remediator.actions.base import (
    Action,
    ActionRefused,
    LoadContext,
    Outcome,
    excerpt,
    require_declared,
    string_mapping,
)
from remediator.process import run_process


@dataclass(frozen=True)
class ExecAction(Action):
    keys: ClassVar[tuple[str, ...]] = ("command", "env")

    command: tuple[str, ...]
    env: dict[str, str]

    @classmethod
    def from_config(cls, section: dict, context: LoadContext) -> ExecAction:
        command = section.get("command")
        key = f"{context.prefix}.command"
        if (not isinstance(command, list) or not command
                or not all(isinstance(item, str) and item for item in command)):
            raise context.checker.fail(key, "must be a non-empty list of non-empty strings "
                                            "(the program and its arguments; no shell)")
        command = [*command]
        command[0] = resolve_executable(context, f"{key}[0]", command[0])
        check_argv_placeholders(context, key, command)
        return cls(tuple(command), string_mapping(context, f"{context.prefix}.env",
                                                  section.get("env")))

    def render(self, values: Mapping[str, str]) -> dict[str, Any]:
        return {"argv": fill_argv(self.command, values)}

    def execute(self, invocation: dict[str, Any], timeout_seconds: float) -> Outcome:
        return run_argv(invocation["argv"], timeout_seconds, self.env)


def resolve_executable(context: LoadContext, key: str, program: str) -> str:
    """program as an absolute path (relative to the config file's folder if relative). A missing
    program is an error, or only a warning for a dry-run action (staged before it is installed)."""
    if placeholders.names_in(program):
        raise context.checker.fail(key, "the program itself cannot be a placeholder")
    try:
        program = path_string(program)
        path = Path(program) if os.path.isabs(program) else (context.base_dir / program).resolve()
        executable = path.is_file() and os.access(path, os.X_OK)
    except (OSError, ValueError) as error:  # the OS refuses the path (permissions, a loop)
        raise context.checker.fail(key, str(error)) from None
    if not executable:
        problem = f"{path} is not an executable file"
        if not context.dry_run:
            raise context.checker.fail(key, problem)
        context.warnings.append(f"{context.checker.source}: {key}: {problem} "
                                f"(the action is dry_run, so it never runs)")
    return str(path)


def check_argv_placeholders(context: LoadContext, key: str, argv: Sequence[str]) -> None:
    for index, item in enumerate(argv):
        names = placeholders.names_in(item)
        if not names:
            continue
        if placeholders.PLACEHOLDER.fullmatch(item) is None:
            raise context.checker.fail(f"{key}[{index}]", f"{item!r}: a placeholder must be a "
                                       f"whole argument, so a label is always one argv item")
        require_declared(context, f"{key}[{index}]", item)


def fill_argv(command: Sequence[str], values: Mapping[str, str]) -> list[str]:
    argv = []
    for item in command:
        match = placeholders.PLACEHOLDER.fullmatch(item)
        if match is None:
            argv.append(item)
            continue
        value = values[match.group(1)]
        if value.startswith("-") or "\0" in value:
            raise ActionRefused("unsafe_label_value", f"placeholder {item} = {value!r}: a value "
                                "starting with '-' (or holding a NUL byte) is refused as an "
                                "argument")
        argv.append(value)
    return argv


def run_argv(argv: Sequence[str], timeout_seconds: float,
             env: Mapping[str, str] | None = None) -> Outcome:
    """Run argv; success on exit code 0, failure otherwise, timeout when it had to be killed."""
    try:
        finished = run_process(argv, timeout_seconds, env)
    except OSError as error:
        return Outcome("error", {"output": f"cannot start {argv[0]}: {error}"})
    details = {"exit_code": finished.exit_code, "output": excerpt(finished.output)}
    if finished.timed_out:
        return Outcome("timeout", details)
    return Outcome("success" if finished.exit_code == 0 else "failure", details)


ACTION_CLASS = ExecAction

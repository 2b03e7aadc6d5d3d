"""`type: notify`: a Slack message, the URL read from a file as Alertmanager's
`slack_api_url_file` is. Placeholders fill the text (and the channel) with `&`, `<` and `>`
escaped as Slack asks, so a label cannot ping `<!channel>` or forge a link.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from exporter.strict_input import path_string
from remediator import placeholders
from remediator.actions.base import Action, LoadContext, Outcome, require_declared
from remediator.slack import SlackError, post_message, slack_escaped


@dataclass(frozen=True)
class NotifyAction(Action):
    keys: ClassVar[tuple[str, ...]] = ("slack_api_url_file", "channel", "text")

    url_file: str
    channel: str | None
    text: str

    @classmethod
    def from_config(cls, section: dict, context: LoadContext) -> NotifyAction:
        checker, prefix = context.checker, context.prefix
        url_file = checker.typed(section, prefix, "slack_api_url_file", path_string,
                                 required=True)
        templates = {"text": section.get("text"), "channel": section.get("channel") or ""}
        if not isinstance(templates["text"], str) or not templates["text"]:
            raise checker.fail(f"{prefix}.text", "is required: the message (placeholders "
                                                 "allowed)")
        for key, template in templates.items():
            if not isinstance(template, str):
                raise checker.fail(f"{prefix}.{key}", "must be a string")
            require_declared(context, f"{prefix}.{key}", template)
        return cls(str(context.base_dir / url_file), templates["channel"] or None,
                   templates["text"])

    def render(self, values: Mapping[str, str]) -> dict[str, Any]:
        invocation = {"text": placeholders.fill(self.text, values, slack_escaped)}
        if self.channel:
            invocation["channel"] = placeholders.fill(self.channel, values, slack_escaped)
        return invocation

    def execute(self, invocation: dict[str, Any], timeout_seconds: float) -> Outcome:
        try:
            status = post_message(self.url_file, invocation["text"], invocation.get("channel"),
                                  timeout_seconds)
        except SlackError as error:
            return Outcome("failure", {"output": str(error)})
        return Outcome("success", {"http_status": status})


ACTION_CLASS = NotifyAction

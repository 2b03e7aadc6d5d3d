"""Post a message to a Slack incoming webhook whose URL is read from a file.

The same mechanism as Alertmanager's `slack_api_url_file`: the URL is a secret, so configs name
the file and the URL is read at sending time (a rotated URL needs no restart) and never logged.
"""

from __future__ import annotations

from pathlib import Path

import requests

from exporter.strict_input import InputError, read_text


class SlackError(RuntimeError):
    """The message was not delivered; the text never contains the URL."""


def read_url_file(path: str | Path) -> str:
    try:
        url = read_text(path).strip()
    except InputError as error:
        raise SlackError(f"the Slack URL file {path}: {error.reason}") from None
    if not url.startswith(("https://", "http://")):
        raise SlackError(f"{path} does not hold an http(s) URL")
    return url


def slack_escaped(text: str) -> str:
    """text shown literally by Slack: its three control characters escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def post_message(url_file: str | Path, text: str, channel: str | None = None,
                 timeout_seconds: float = 10.0) -> int:
    """Send text (Slack mrkdwn); returns the HTTP status, SlackError unless it is 2xx."""
    payload = {"text": text}
    if channel:
        payload["channel"] = channel
    try:
        response = requests.post(read_url_file(url_file), json=payload, timeout=timeout_seconds,
                                 allow_redirects=False)
    except requests.RequestException as error:
        raise SlackError(f"Slack unreachable: {type(error).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise SlackError(f"Slack answered {response.status_code}: {response.text[:200]}")
    return response.status_code

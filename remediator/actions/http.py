"""`type: http`: one configured request, e.g. telling a load balancer to move traffic to a
standby.

Placeholders may fill the URL (each value percent-encoded, so a label cannot add a path segment
or a query) and the body: a mapping body is sent as JSON with placeholders filled inside its
strings (the JSON encoder escapes the values), a string body is sent as written. Headers whose
values are secrets are named in `header_files` and read at sending time, never logged.
Redirects are not followed: a 3xx is a failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from exporter.strict_input import InputError, path_string, read_text
from remediator import placeholders
from remediator.actions.base import (
    Action,
    LoadContext,
    Outcome,
    excerpt,
    require_declared,
    string_mapping,
)

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class HttpAction(Action):
    keys: ClassVar[tuple[str, ...]] = ("method", "url", "headers", "header_files", "body",
                                       "tls_ca_file")

    method: str
    url: str
    headers: dict[str, str]
    header_files: dict[str, str]
    body: Any
    verify: str | bool
    """requests' verify: True, or the CA file for the load balancer's certificate."""

    @classmethod
    def from_config(cls, section: dict, context: LoadContext) -> HttpAction:
        checker, prefix = context.checker, context.prefix
        method = section.get("method", "POST")
        if method not in METHODS:
            raise checker.fail(f"{prefix}.method", f"must be one of {', '.join(METHODS)}, "
                                                   f"got {method!r}")
        url = section.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise checker.fail(f"{prefix}.url", f"must be an http:// or https:// URL, got {url!r}")
        if placeholders.names_in(urlsplit(url).netloc):
            raise checker.fail(f"{prefix}.url", "the host cannot come from a placeholder")
        body = section.get("body")
        if body is not None and not isinstance(body, str | dict | list):
            raise checker.fail(f"{prefix}.body", "must be a string or a mapping (sent as JSON)")
        for key, text in [("url", url), *(("body", item) for item in _strings(body))]:
            require_declared(context, f"{prefix}.{key}", text)
        header_files = string_mapping(context, f"{prefix}.header_files",
                                      section.get("header_files"))
        header_files = {name: str(context.base_dir / checker.typed(
            header_files, f"{prefix}.header_files", name, path_string)) for name in header_files}
        ca_file = checker.typed(section, prefix, "tls_ca_file", path_string)
        if ca_file is not None:
            ca_path = context.base_dir / ca_file
            if not ca_path.is_file():
                raise checker.fail(f"{prefix}.tls_ca_file", f"file {ca_path} does not exist")
        return cls(method, url, string_mapping(context, f"{prefix}.headers",
                                               section.get("headers")),
                   header_files, body, str(context.base_dir / ca_file) if ca_file else True)

    def render(self, values: Mapping[str, str]) -> dict[str, Any]:
        parts = urlsplit(self.url)
        url = urlunsplit(parts._replace(
            path=placeholders.fill(parts.path, values, _percent_encoded),
            query=placeholders.fill(parts.query, values, _percent_encoded)))
        invocation: dict[str, Any] = {"method": self.method, "url": url}
        if isinstance(self.body, str):
            invocation["body"] = placeholders.fill(self.body, values)
        elif self.body is not None:
            invocation["json"] = _fill_json(self.body, values)
        return invocation

    def execute(self, invocation: dict[str, Any], timeout_seconds: float) -> Outcome:
        headers = dict(self.headers)
        try:
            for name, path in self.header_files.items():
                headers[name] = read_text(path).strip()
        except InputError as error:
            return Outcome("error", {"output": f"cannot read header file: {error}"})
        try:
            response = requests.request(
                invocation["method"], invocation["url"], headers=headers,
                data=invocation.get("body", "").encode() if "body" in invocation else None,
                json=invocation.get("json"), timeout=timeout_seconds, allow_redirects=False,
                verify=self.verify)
        except requests.Timeout:
            return Outcome("timeout", {"output": f"no answer within {timeout_seconds:g}s"})
        except requests.RequestException as error:
            return Outcome("error", {"output": f"request failed: {type(error).__name__}: "
                                               f"{error}"[:300]})
        details = {"http_status": response.status_code, "output": excerpt(response.text)}
        return Outcome("success" if 200 <= response.status_code < 300 else "failure", details)


def _strings(body: Any) -> list[str]:
    """Every string inside a body (keys and values of a JSON-like structure)."""
    if isinstance(body, str):
        return [body]
    if isinstance(body, dict):
        return [text for key, value in body.items() for text in (*_strings(key),
                                                                  *_strings(value))]
    if isinstance(body, list):
        return [text for item in body for text in _strings(item)]
    return []


def _fill_json(body: Any, values: Mapping[str, str]) -> Any:
    if isinstance(body, str):
        return placeholders.fill(body, values)
    if isinstance(body, dict):
        return {_fill_json(key, values): _fill_json(value, values) for key, value in body.items()}
    if isinstance(body, list):
        return [_fill_json(item, values) for item in body]
    return body


def _percent_encoded(value: str) -> str:
    return quote(value, safe="")


ACTION_CLASS = HttpAction

"""--web.config.file in the Prometheus exporter-toolkit format: TLS and bcrypt basic auth.

The same file a node_exporter deployment already has works here. Every mistake is reported with
the file, the key and the reason, at start-up, rather than as a failed scrape later.
"""

from __future__ import annotations

import hashlib
import re
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOP_LEVEL_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users"}
TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version",
            "max_version"}
HTTP_KEYS = {"http2", "headers"}
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
CLIENT_AUTH_MODES = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Accepted by exporter-toolkit, but Python's TLS cannot take a client certificate unverified.
UNSUPPORTED_CLIENT_AUTH = {"RequestClientCert", "RequireAnyClientCert"}
BCRYPT_HASH = re.compile(r"^\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}$")


class WebConfigError(ValueError):
    """The web config file is unusable; the message names the file, the key and why."""


@dataclass
class WebConfig:
    """What the HTTP server needs: an optional TLS context, users, and extra headers."""

    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    _verified: set[bytes] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check_password(self, username: str, password: str) -> bool:
        """bcrypt is deliberately slow (~50 ms), so a pair that matched once is remembered."""
        hashed = self.users.get(username)
        if hashed is None:
            return False
        key = hashlib.sha256(b"\0".join([username.encode(), password.encode(), hashed])).digest()
        with self._lock:
            if key in self._verified:
                return True
        import bcrypt  # only needed when basic auth is configured

        if not bcrypt.checkpw(password.encode(), hashed):
            return False
        with self._lock:
            self._verified.add(key)
        return True


def load_web_config(path: str | Path) -> WebConfig:
    """Parse and validate the file; raise WebConfigError naming the key at fault."""
    import yaml  # only with --web.config.file: keeps ~1 MiB off every other exporter's RSS

    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as error:
        raise WebConfigError(f"{path}: cannot read: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise WebConfigError(f"{path}: not valid YAML: {error}") from error
    document = {} if document is None else document
    _require_mapping(path, "top level", document, TOP_LEVEL_KEYS)
    config = WebConfig()
    base = path.parent
    if document.get("tls_server_config") is not None:
        config.ssl_context = _tls_context(path, base, document["tls_server_config"])
    if document.get("http_server_config") is not None:
        config.headers = _headers(path, document["http_server_config"])
    if document.get("basic_auth_users") is not None:
        config.users = _users(path, document["basic_auth_users"])
    return config


def _require_mapping(path: Path, where: str, value: Any, allowed: set[str]) -> None:
    if not isinstance(value, dict):
        raise WebConfigError(f"{path}: {where}: expected a mapping, got {type(value).__name__}")
    for key in value:
        if key not in allowed:
            raise WebConfigError(f"{path}: {where}: unknown key {key!r} "
                                 f"(allowed: {', '.join(sorted(allowed))})")


def _file(path: Path, base: Path, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise WebConfigError(f"{path}: tls_server_config.{key}: expected a file path")
    resolved = (base / value).resolve()
    if not resolved.is_file():
        raise WebConfigError(f"{path}: tls_server_config.{key}: {resolved} does not exist")
    return str(resolved)


def _tls_version(path: Path, key: str, value: Any) -> ssl.TLSVersion:
    if value not in TLS_VERSIONS:
        raise WebConfigError(f"{path}: tls_server_config.{key}: {value!r} is not one of "
                             f"{', '.join(TLS_VERSIONS)}")
    return TLS_VERSIONS[value]


def _tls_context(path: Path, base: Path, section: Any) -> ssl.SSLContext:
    _require_mapping(path, "tls_server_config", section, TLS_KEYS)
    for required in ("cert_file", "key_file"):
        if not section.get(required):
            raise WebConfigError(f"{path}: tls_server_config.{required}: required when "
                                 f"tls_server_config is set")
    cert_file = _file(path, base, "cert_file", section["cert_file"])
    key_file = _file(path, base, "key_file", section["key_file"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _tls_version(path, "min_version", section.get("min_version", "TLS12"))
    if "max_version" in section:
        context.maximum_version = _tls_version(path, "max_version", section["max_version"])
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as error:
        raise WebConfigError(f"{path}: tls_server_config.cert_file/key_file: cannot load the "
                             f"certificate and key: {error}") from error
    ca_file = section.get("client_ca_file")
    default_mode = "RequireAndVerifyClientCert" if ca_file else "NoClientCert"
    mode = section.get("client_auth_type") or default_mode
    if mode in UNSUPPORTED_CLIENT_AUTH:
        raise WebConfigError(f"{path}: tls_server_config.client_auth_type: {mode} is not "
                             f"supported here (client certificates are always verified); use "
                             f"VerifyClientCertIfGiven or RequireAndVerifyClientCert")
    if mode not in CLIENT_AUTH_MODES:
        raise WebConfigError(f"{path}: tls_server_config.client_auth_type: {mode!r} is not one "
                             f"of {', '.join(CLIENT_AUTH_MODES)}")
    context.verify_mode = CLIENT_AUTH_MODES[mode]
    if context.verify_mode != ssl.CERT_NONE:
        if not ca_file:
            raise WebConfigError(f"{path}: tls_server_config.client_ca_file: required for "
                                 f"client_auth_type {mode}")
        try:
            context.load_verify_locations(_file(path, base, "client_ca_file", ca_file))
        except ssl.SSLError as error:
            raise WebConfigError(f"{path}: tls_server_config.client_ca_file: not a CA "
                                 f"certificate: {error}") from error
    return context


def _headers(path: Path, section: Any) -> dict[str, str]:
    _require_mapping(path, "http_server_config", section, HTTP_KEYS)
    headers = section.get("headers") or {}
    if not isinstance(headers, dict) or not all(
            isinstance(name, str) and isinstance(value, str) for name, value in headers.items()):
        raise WebConfigError(f"{path}: http_server_config.headers: expected a mapping of "
                             f"header name to string value")
    return dict(headers)


def _users(path: Path, section: Any) -> dict[str, bytes]:
    if not isinstance(section, dict):
        raise WebConfigError(f"{path}: basic_auth_users: expected a mapping of user to bcrypt hash")
    users = {}
    for user, hashed in section.items():
        if not isinstance(hashed, str) or not BCRYPT_HASH.match(hashed):
            raise WebConfigError(f"{path}: basic_auth_users.{user}: not a bcrypt hash (expected "
                                 f"$2y$10$... as made by `htpasswd -nBC 10`)")
        users[str(user)] = hashed.encode()
    return users

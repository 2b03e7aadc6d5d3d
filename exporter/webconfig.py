"""--web.config.file in the Prometheus exporter-toolkit format: TLS and bcrypt basic auth.

The same file a node_exporter deployment already has works here, and it behaves as
exporter-toolkit does: an unknown user costs the same bcrypt check as a wrong password (so user
names cannot be probed by timing), bcrypt checks run one at a time (a flood of wrong passwords
holds one core, not all), a bounded cache remembers pairs that matched, and only the security
headers exporter-toolkit allows can be added. Every mistake is reported with the file, the key
and the reason, at start-up, rather than as a failed scrape later.
"""

from __future__ import annotations

import hashlib
import re
import ssl
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.strict_input import InputError, load_yaml_file, shorten

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
BCRYPT_HASH = re.compile(r"^\$2[abxy]?\$(\d{2})\$[./A-Za-z0-9]{53}$")
# exporter-toolkit's extraHTTPHeaders: the only names it lets a web config add, and the values
# allowed where the header is an enumeration (None: any value without control characters).
ALLOWED_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
VERIFIED_CACHE_SIZE = 100  # exporter-toolkit's cacheSize
DECOY_PASSWORD = b"decoy password for unknown users"


class WebConfigError(ValueError):
    """The web config file is unusable; the message names the file, the key and why."""


@dataclass
class WebConfig:
    """What the HTTP server needs: an optional TLS context, users, and extra headers."""

    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    _verified: OrderedDict[bytes, None] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _bcrypt_lock: threading.Lock = field(default_factory=threading.Lock)
    _decoy_hash: bytes | None = None

    def check_password(self, username: str, password: str) -> bool:
        """True if the pair matches a configured user.

        bcrypt is deliberately slow (~50 ms at cost 10), so a pair that matched is remembered
        (the VERIFIED_CACHE_SIZE most recent ones). An unknown user is checked against a decoy
        hash of the same cost, so it takes as long as a wrong password; checks run one at a
        time, as in exporter-toolkit.
        """
        hashed = self.users.get(username)
        candidate = password.encode()
        if hashed is not None:
            key = hashlib.sha256(b"\0".join([username.encode(), candidate, hashed])).digest()
            with self._lock:
                if key in self._verified:
                    self._verified.move_to_end(key)
                    return True
        import bcrypt  # only needed when basic auth is configured

        with self._bcrypt_lock:
            if hashed is None:
                bcrypt.checkpw(candidate, self._decoy())
                return False
            if not bcrypt.checkpw(candidate, hashed):
                return False
        with self._lock:
            self._verified[key] = None
            while len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        return True

    def _decoy(self) -> bytes:
        """A hash with the highest cost among the users' (made once, on first need)."""
        if self._decoy_hash is None:
            import bcrypt

            cost = max((int(BCRYPT_HASH.match(hashed.decode()).group(1))
                        for hashed in self.users.values()), default=10)
            self._decoy_hash = bcrypt.hashpw(DECOY_PASSWORD, bcrypt.gensalt(rounds=cost))
        return self._decoy_hash


def load_web_config(path: str | Path) -> WebConfig:
    """Parse and validate the file; raise WebConfigError naming the key at fault."""
    path = Path(path)
    try:
        document = load_yaml_file(path)
    except InputError as error:
        raise WebConfigError(str(error)) from None
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
        config._decoy()  # the first unknown user must not be the one check that is faster
    return config


def _require_mapping(path: Path, where: str, value: Any, allowed: set[str]) -> None:
    if not isinstance(value, dict):
        raise WebConfigError(f"{path}: {where}: expected a mapping, got {type(value).__name__}")
    for key in value:
        if key not in allowed:
            raise WebConfigError(f"{path}: {where}: unknown key {shorten(repr(key))} "
                                 f"(allowed: {', '.join(sorted(allowed))})")


def _file(path: Path, base: Path, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value or "\0" in value:
        raise WebConfigError(f"{path}: tls_server_config.{key}: expected a file path")
    try:
        resolved = (base / value).resolve()
        exists = resolved.is_file()
    except OSError as error:
        raise WebConfigError(f"{path}: tls_server_config.{key}: {shorten(value, 100)}: "
                             f"{error.strerror or error}") from None
    if not exists:
        raise WebConfigError(f"{path}: tls_server_config.{key}: {shorten(str(resolved), 200)} "
                             f"does not exist")
    return str(resolved)


def _tls_version(path: Path, key: str, value: Any) -> ssl.TLSVersion:
    if not isinstance(value, str) or value not in TLS_VERSIONS:
        raise WebConfigError(f"{path}: tls_server_config.{key}: {shorten(repr(value))} is not "
                             f"one of {', '.join(TLS_VERSIONS)}")
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
    if not isinstance(mode, str):
        raise WebConfigError(f"{path}: tls_server_config.client_auth_type: expected one of "
                             f"{', '.join(CLIENT_AUTH_MODES)}")
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
    """exporter-toolkit's rules: allowed names only, enumerated values where it has them."""
    _require_mapping(path, "http_server_config", section, HTTP_KEYS)
    if section.get("http2") is not None and not isinstance(section["http2"], bool):
        raise WebConfigError(f"{path}: http_server_config.http2: expected true or false")
    headers = section.get("headers") or {}
    if not isinstance(headers, dict) or not all(
            isinstance(name, str) and isinstance(value, str) for name, value in headers.items()):
        raise WebConfigError(f"{path}: http_server_config.headers: expected a mapping of "
                             f"header name to string value")
    for name, value in headers.items():
        where = f"{path}: http_server_config.headers.{shorten(name, 60)}"
        if name not in ALLOWED_HEADERS:
            raise WebConfigError(f"{where}: this header cannot be configured (allowed, as in "
                                 f"exporter-toolkit: {', '.join(ALLOWED_HEADERS)})")
        if _CONTROL_CHARACTERS.search(value):
            raise WebConfigError(f"{where}: the value contains a control character (CR, LF, "
                                 f"...), which would split the response header")
        allowed_values = ALLOWED_HEADERS[name]
        if allowed_values is not None and value not in allowed_values:
            raise WebConfigError(f"{where}: {shorten(repr(value), 60)} is not one of "
                                 f"{', '.join(allowed_values)}")
    return dict(headers)


def _users(path: Path, section: Any) -> dict[str, bytes]:
    if not isinstance(section, dict):
        raise WebConfigError(f"{path}: basic_auth_users: expected a mapping of user to bcrypt hash")
    users = {}
    for user, hashed in section.items():
        if isinstance(user, int) and not isinstance(user, bool):
            user = str(user)  # `1234: $2y$...` is a user named "1234"
        if not isinstance(user, str) or _CONTROL_CHARACTERS.search(user) or ":" in user:
            raise WebConfigError(f"{path}: basic_auth_users: {shorten(repr(user), 60)} is not a "
                                 f"user name (a string without ':' or control characters)")
        match = BCRYPT_HASH.match(hashed) if isinstance(hashed, str) else None
        if match is None or not 4 <= int(match.group(1)) <= 31:
            raise WebConfigError(f"{path}: basic_auth_users.{shorten(user, 60)}: not a bcrypt "
                                 f"hash (expected $2y$10$... as made by `htpasswd -nBC 10`)")
        users[user] = hashed.encode()
    return users

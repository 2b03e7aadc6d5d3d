"""One requests session per backend, configured from the keys the reader and the remote writer
share (HttpClientConfig): headers, basic auth, TLS verification, and a bearer token file read
per request, so a rotated token is picked up without a restart."""

from __future__ import annotations

from pathlib import Path

import requests

from anomaly_sidecar.config import HttpClientConfig


def new_session(config: HttpClientConfig) -> requests.Session:
    session = requests.Session()
    session.headers.update(config.headers)
    if config.basic_auth is not None:
        session.auth = (config.basic_auth.username, config.basic_auth.password)
    if config.tls_insecure_skip_verify:
        session.verify = False
    elif config.tls_ca_file:
        session.verify = config.tls_ca_file
    return session


def auth_headers(config: HttpClientConfig) -> dict[str, str]:
    """The Authorization header of a bearer token file, read now; {} without one."""
    if not config.bearer_token_file:
        return {}
    token = Path(config.bearer_token_file).read_text().strip()
    return {"Authorization": f"Bearer {token}"}

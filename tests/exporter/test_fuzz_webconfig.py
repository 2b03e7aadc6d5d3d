"""Property-based: any web-config file content loads or raises WebConfigError, within a bound."""

from __future__ import annotations

import yaml
from hypothesis import given
from hypothesis import strategies as st

from exporter.webconfig import WebConfig, WebConfigError, load_web_config
from tests.support.fuzzing import FUZZ, json_values, load_file, raw_bytes, scalars

SECTIONS = {
    "tls_server_config": st.dictionaries(
        st.sampled_from(["cert_file", "key_file", "client_auth_type", "client_ca_file",
                         "min_version", "max_version", "other"]), scalars, max_size=4),
    "http_server_config": st.fixed_dictionaries({}, optional={
        "headers": st.dictionaries(st.sampled_from(["X-Frame-Options", "Set-Cookie",
                                                    "Content-Security-Policy", "X\nY"]),
                                   scalars, max_size=3),
        "http2": scalars}),
    "basic_auth_users": st.dictionaries(scalars.filter(lambda v: not isinstance(v, float)),
                                        st.one_of(scalars, st.just("$2y$10$" + "a" * 53)),
                                        max_size=3),
}
documents = st.one_of(
    st.fixed_dictionaries({}, optional=SECTIONS).map(lambda doc: yaml.safe_dump(doc).encode()),
    json_values.map(lambda doc: yaml.safe_dump(doc).encode()),
    raw_bytes)


@FUZZ
@given(content=documents)
def test_any_web_config_loads_or_raises_web_config_error(content: bytes) -> None:
    config = load_file(content, "web.yml", load_web_config, WebConfigError)
    if config is not None:
        assert isinstance(config, WebConfig)
        assert all("\n" not in value and "\r" not in value for value in config.headers.values())

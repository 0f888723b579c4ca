"""Authenticated HTTP(S) endpoints for the validations' and sensors' Prometheus and Alertmanager clients.

An endpoint is a base URL plus how to reach it: basic auth (`user:password`, inline or from a file, or
`user:password@` inside the URL), a bearer token (from a file: Grafana Cloud, Mimir, Thanos, any proxy), a CA
file for https, and extra headers (e.g. `X-Scope-OrgID` for a Mimir tenant). Settings come from the
environment, one prefix per service, see ENDPOINT_SETTINGS: K2_PROMETHEUS_BASIC_AUTH, K2_PROMETHEUS_BASIC_AUTH_FILE,
K2_PROMETHEUS_BEARER_TOKEN_FILE, K2_PROMETHEUS_CA_FILE, K2_PROMETHEUS_HEADERS, and the same for Alertmanager:
K2_ALERTMANAGER_BASIC_AUTH, K2_ALERTMANAGER_BASIC_AUTH_FILE, K2_ALERTMANAGER_BEARER_TOKEN_FILE,
K2_ALERTMANAGER_CA_FILE, K2_ALERTMANAGER_HEADERS.

Invariants: `Endpoint.url` never holds credentials (they are moved out of the URL into the Authorization
header), so every message built from it is safe to log; secrets are kept out of repr; a bad setting raises
`EndpointConfigError` naming the setting and its allowed range.
"""

from __future__ import annotations

import base64
import http.client
import os
import ssl
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from streamer.redact import mask_credentials, split_credentials


class EndpointConfigError(ValueError):
    """An endpoint setting is malformed; the message names it and its allowed range."""


# (suffix, allowed, meaning): the settings of one endpoint, K2_<SERVICE>_<suffix>.
ENDPOINT_SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("BASIC_AUTH", "unset or user:password", "HTTP basic auth (never logged); prefer _FILE"),
    ("BASIC_AUTH_FILE", "unset or a readable file holding user:password", "HTTP basic auth from a file (a secret)"),
    ("BEARER_TOKEN_FILE", "unset or a readable file holding the token", "Authorization: Bearer <token>"),
    ("CA_FILE", "unset (the system's trust store) or an existing PEM file", "CA of an https:// endpoint"),
    ("HEADERS", "unset or Name=value[,Name=value...]", "extra request headers (e.g. X-Scope-OrgID=tenant)"),
)


def _read_one_line(name: str, path: str) -> str:
    try:
        text = Path(path).read_text().rstrip("\r\n")
    except OSError as exc:
        raise EndpointConfigError(f"{name}={path!r}: cannot read the file ({exc.strerror})") from None
    if not text or "\n" in text:
        raise EndpointConfigError(f"{name}={path!r}: allowed: a file holding exactly one non-empty line")
    return text


@dataclass(frozen=True)
class Endpoint:
    url: str
    basic_auth: str | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if self.basic_auth and self.bearer_token:
            raise EndpointConfigError(f"{mask_credentials(self.url)}: basic auth and a bearer token are both set; "
                                      "allowed: one of them")

    @classmethod
    def from_env(cls, url: str, service: str, environ: Mapping[str, str] | None = None) -> Endpoint:
        """`url` (credentials inside it become basic auth) and the K2_<SERVICE>_* settings."""
        env = os.environ if environ is None else environ
        prefix = f"K2_{service.upper()}_"
        bare, basic = split_credentials(url.rstrip("/"))
        inline, path = env.get(prefix + "BASIC_AUTH") or None, env.get(prefix + "BASIC_AUTH_FILE") or None
        if inline and path:
            raise EndpointConfigError(f"{prefix}BASIC_AUTH and {prefix}BASIC_AUTH_FILE are both set; allowed: one")
        given = inline or (_read_one_line(prefix + "BASIC_AUTH_FILE", path) if path else None)
        if given is not None:
            if ":" not in given or given.startswith(":"):
                name = prefix + ("BASIC_AUTH" if inline else "BASIC_AUTH_FILE")
                raise EndpointConfigError(f"{name}='***' is malformed; allowed: user:password")
            basic = given
        token_file = env.get(prefix + "BEARER_TOKEN_FILE") or None
        token = _read_one_line(prefix + "BEARER_TOKEN_FILE", token_file) if token_file else None
        ca_file = env.get(prefix + "CA_FILE") or None
        if ca_file is not None and not Path(ca_file).is_file():
            raise EndpointConfigError(f"{prefix}CA_FILE={ca_file!r} is not a file; allowed: an existing PEM file")
        headers: list[tuple[str, str]] = []
        for item in (env.get(prefix + "HEADERS") or "").split(","):
            if not item.strip():
                continue
            name, sep, value = item.partition("=")
            if not sep or not name.strip() or any(c in name for c in " :\r\n"):
                raise EndpointConfigError(f"{prefix}HEADERS: {name.strip()!r} is malformed; allowed: "
                                          "Name=value[,Name=value...]")
            headers.append((name.strip(), value.strip()))
        return cls(bare, basic, token, ca_file, tuple(headers))

    def request(self, path_and_query: str, *, data: bytes | None = None, method: str | None = None,
                headers: Mapping[str, str] | None = None) -> urllib.request.Request:
        all_headers = dict(self.headers) | dict(headers or {})
        if self.basic_auth:
            all_headers["Authorization"] = "Basic " + base64.b64encode(self.basic_auth.encode()).decode()
        elif self.bearer_token:
            all_headers["Authorization"] = f"Bearer {self.bearer_token}"
        return urllib.request.Request(self.url + path_and_query, data=data, method=method, headers=all_headers)

    def open(self, request: urllib.request.Request, timeout_s: float) -> http.client.HTTPResponse:
        """urlopen with this endpoint's CA; HTTPError/URLError propagate as urllib raises them."""
        context = ssl.create_default_context(cafile=self.ca_file) if self.url.startswith("https://") else None
        # urlopen's stub says Any (its answer depends on the scheme); for an http(s) URL it is an HTTPResponse.
        response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=timeout_s, context=context)
        return response

    def get(self, path_and_query: str, timeout_s: float) -> http.client.HTTPResponse:
        return self.open(self.request(path_and_query), timeout_s)

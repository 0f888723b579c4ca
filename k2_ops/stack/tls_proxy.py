"""A TLS + basic-auth reverse proxy (Debian's nginx) in front of a local HTTP service.

It stands in for how a data team runs a Schema Registry (or Prometheus) in production: behind https and a
password. nginx runs in the foreground (`daemon off`), stops on SIGTERM, writes only inside its folder, and
logs no credentials (access log off; error lines name the user at most).

Invariant: the htpasswd file holds a bcrypt hash, never the password.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from k2_ops.http_endpoint import Endpoint
from k2_ops.stack.process import ServiceError, SupervisedService

NGINX_CONFIG = """\
{user}
worker_processes 1;
error_log {home}/error.log warn;
pid {home}/nginx.pid;
events {{ worker_connections 128; }}
http {{
    access_log off;
    client_body_temp_path {home}/tmp/body;
    proxy_temp_path {home}/tmp/proxy;
    fastcgi_temp_path {home}/tmp/fastcgi;
    uwsgi_temp_path {home}/tmp/uwsgi;
    scgi_temp_path {home}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
{auth}
        location / {{
            proxy_pass {upstream};
            proxy_set_header Authorization "";
        }}
    }}
}}
"""


@dataclass
class TlsProxyService(SupervisedService):
    """https://127.0.0.1:<port>/ with basic auth, forwarding to `upstream` (http://127.0.0.1:...)."""

    run_dir: Path
    upstream: str
    users: dict[str, str] = field(repr=False)  # user -> password (hashed before it touches the disk)
    # Instead of basic auth: require `Authorization: Bearer <token>` (and these headers), like a Mimir or
    # Grafana Cloud gateway. The token sits in the nginx config, inside the proxy's folder.
    bearer_token: str | None = field(default=None, repr=False)
    required_headers: dict[str, str] = field(default_factory=dict)
    ca: trustme.CA | None = field(default=None, repr=False)
    port: int = 0
    name: str = "tls-proxy"
    ready_timeout_s: float = 20.0
    ca_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self._allocate_ports("port")
        self.ca = self.ca or trustme.CA(organization_name="K2 proxy test CA")
        self.ca_file = self.home / "ca.pem"

    @property
    def home(self) -> Path:
        return self.run_dir / self.name

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def health_url(self) -> str:
        return self.url + "/"

    def _write_files(self) -> Path:
        (self.home / "tmp").mkdir(parents=True, exist_ok=True)
        assert self.ca is not None
        leaf = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        cert, key = self.home / "server.pem", self.home / "server.key"
        leaf.private_key_pem.write_to_path(str(key))
        cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
        self._write_htpasswd()
        config = self.home / "nginx.conf"
        if self.bearer_token is None:
            auth = f'        auth_basic "k2";\n        auth_basic_user_file {self.home / "htpasswd"};'
        else:
            checks = [("authorization", f"Bearer {self.bearer_token}", 401)]
            checks += [(name.lower().replace("-", "_"), value, 403) for name, value in self.required_headers.items()]
            auth = "\n".join(f'        if ($http_{name} != "{value}") {{ return {status}; }}'
                              for name, value, status in checks)
        config.write_text(NGINX_CONFIG.format(
            user="user root;" if os.geteuid() == 0 else "", home=self.home, port=self.port, cert=cert, key=key,
            auth=auth, upstream=self.upstream.rstrip("/") + "/"))
        return config

    def start(self) -> float:
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
        if nginx is None:
            raise ServiceError("nginx not found (apt-get install nginx-light; `make setup` does it)")
        # The port is in the config file: written again for each start (a retry on a fresh port).
        self._launch(lambda: [nginx, "-p", str(self.home), "-c", str(self._write_files()), "-g", "daemon off;"],
                     stop_grace_s=5.0)
        return 0.0

    def _write_htpasswd(self) -> None:
        import bcrypt

        text = "".join(f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
                       for user, password in self.users.items())
        temporary = self.home / "htpasswd.new"
        temporary.write_text(text)
        temporary.replace(self.home / "htpasswd")  # nginx reads the file per request: never a half-written one

    def set_users(self, users: dict[str, str]) -> None:
        """Change the accepted users and passwords (a credential rotation); effective for the next request."""
        self.users = dict(users)
        self._write_htpasswd()

    def endpoint(self, user: str) -> Endpoint:
        return Endpoint(self.url, basic_auth=f"{user}:{self.users[user]}", ca_file=str(self.ca_file))

    def is_ready(self) -> bool:
        try:
            with Endpoint(self.url, ca_file=str(self.ca_file)).get("/", 1.0):
                return True
        except OSError as exc:  # 401 without credentials: nginx is up and speaks TLS
            return getattr(exc, "code", None) == 401

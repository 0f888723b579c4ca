"""A small HTTP control endpoint on loopback for fault injection and ground truth (stdlib http.server).

    POST /<fault>  JSON body = keyword arguments, e.g.
        curl -X POST localhost:CPORT/close_connections -d '{"code": 1011}'
        curl -X POST localhost:CPORT/stall -d '{"seconds": 5}'
        curl -X POST localhost:CPORT/list_symbols -d '{"symbols": ["newusdt"]}'
        curl -X POST localhost:CPORT/delist_symbols -d '{"symbols": ["ethusdt"]}'
        curl -X POST localhost:CPORT/rest_fault -d '{"status": 429, "seconds": 10}'
        curl -X POST localhost:CPORT/skip_messages -d '{"streams": ["btcusdt@trade"], "count": 3}'
    GET  /status | /connections | /connection_attempts | /rest_requests
    GET  /generated_ids?symbol=btcusdt&stream=trade&since=MS&until=MS
    GET  /sent_ids?symbol=btcusdt&stream=trade&connection_id=N
    GET  /book?symbol=btcusdt

Answers are JSON: {"ok": true, "result": ...} or {"ok": false, "error": "..."} with 400/404.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from .background import BackgroundSimulator

log = logging.getLogger("k2_ops.simulator.control")

FAULTS = (
    "drop_connections",
    "close_connections",
    "set_answer_pings",
    "stall",
    "resume_data",
    "send_malformed",
    "send_unknown_event",
    "send_oversized",
    "server_shutdown",
    "refuse_connections",
    "set_cert_mode",
    "pause_market",
    "resume_market",
    "set_rate",
    "burst",
    "list_symbols",
    "delist_symbols",
    "fail_rest",
    "rest_fault",
    "rest_corrupt",
    "skip_messages",
)
MAX_BODY = 64 * 1024


class BadRequest(ValueError):
    pass


def _int_arg(query: dict[str, list[str]], name: str) -> int | None:
    values = query.get(name)
    if not values or values[-1] == "":
        return None
    try:
        return int(values[-1])
    except ValueError as exc:
        raise BadRequest(f"query parameter {name!r} must be an integer, got {values[-1]!r}") from exc


def _str_arg(query: dict[str, list[str]], name: str, default: str | None = None) -> str:
    values = query.get(name)
    if not values:
        if default is None:
            raise BadRequest(f"query parameter {name!r} is required")
        return default
    return values[-1]


class ControlServer:
    def __init__(self, sim: BackgroundSimulator, host: str, port: int) -> None:
        self.sim = sim
        handler = type("Handler", (_Handler,), {"sim": sim})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="k2-simulator-control", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        # An AF_INET server's address is getsockname()'s (host: str, port); bytes are only for AF_UNIX.
        assert isinstance(host, str)
        return f"http://{host}:{port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5.0)


class _Handler(BaseHTTPRequestHandler):
    sim: BackgroundSimulator
    server_version = "k2-simulator-control"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("control: " + format, *args)

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _run(self, action: Any) -> None:
        try:
            self._answer(200, {"ok": True, "result": action()})
        except BadRequest as exc:
            self._answer(400, {"ok": False, "error": str(exc)})
        except (TypeError, ValueError) as exc:
            self._answer(400, {"ok": False, "error": str(exc)})
        except KeyError as exc:
            self._answer(404, {"ok": False, "error": str(exc.args[0]) if exc.args else "not found"})

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        query = parse_qs(split.query)
        sim = self.sim
        routes = {
            "/status": sim.status,
            "/connections": lambda: [dataclasses.asdict(c) for c in sim.connections()],
            "/connection_attempts": sim.connection_attempts,
            "/rest_requests": lambda: [dataclasses.asdict(r) for r in sim.rest_requests()],
            "/book": lambda: sim.book(_str_arg(query, "symbol")),
            "/generated_ids": lambda: sim.generated_ids(
                _str_arg(query, "symbol"),
                _str_arg(query, "stream", "trade"),
                _int_arg(query, "since"),
                _int_arg(query, "until"),
            ),
            "/sent_ids": lambda: sim.sent_ids(
                _str_arg(query, "symbol"),
                _str_arg(query, "stream", "trade"),
                _int_arg(query, "connection_id"),
            ),
        }
        route = routes.get(split.path.rstrip("/") or "/status")
        if route is None:
            self._answer(404, {"ok": False, "error": f"unknown path {split.path}; GET {sorted(routes)}"})
            return
        self._run(route)

    def do_POST(self) -> None:
        name = urlsplit(self.path).path.strip("/")
        if name not in FAULTS:
            self._answer(404, {"ok": False, "error": f"unknown fault {name!r}; POST one of {list(FAULTS)}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._answer(400, {"ok": False, "error": f"body larger than {MAX_BODY} bytes"})
            return
        raw = self.rfile.read(length) if length else b""
        try:
            kwargs = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            self._answer(400, {"ok": False, "error": f"body is not JSON: {exc}"})
            return
        if not isinstance(kwargs, dict):
            self._answer(400, {"ok": False, "error": "body must be a JSON object of keyword arguments"})
            return
        method = getattr(self.sim, name)
        self._run(lambda: method(**kwargs))

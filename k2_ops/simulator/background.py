"""BackgroundSimulator: the simulator's asyncio server on its own thread, driven by thread-safe methods.

Every public method marshals onto the simulator's event loop and waits for the result, so tests and
tools call it from plain synchronous code (or from another event loop's thread; not from the
simulator's own loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from .config import SimulatorConfig
from .connection import ConnectionInfo
from .control import ControlServer
from .rest import CORRUPT_MODES, FAULT_STATUSES, RestRequest
from .server import SimServer

log = logging.getLogger("k2_ops.simulator")
T = TypeVar("T")
CALL_TIMEOUT_S = 30.0


class SimulatorError(RuntimeError):
    """The simulator could not start, or a call into it failed."""


class BackgroundSimulator:
    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: SimServer | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._tmpdir: Path | None = None
        self._control: ControlServer | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> BackgroundSimulator:
        if self._thread is not None:
            raise SimulatorError("simulator already started")
        if self.config.workdir is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="k2-simulator-"))
        self._thread = threading.Thread(target=self._run, name="k2-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise SimulatorError(f"simulator did not start within {timeout_s} s")
        if self._startup_error is not None:
            self._thread.join(5.0)
            self._thread = None
            raise SimulatorError(f"simulator failed to start: {self._startup_error}") from self._startup_error
        if self.config.control_port is not None:
            try:
                self._control = ControlServer(self, "127.0.0.1", self.config.control_port)
            except OSError as exc:
                self.stop()
                raise SimulatorError(
                    f"simulator control endpoint cannot listen on 127.0.0.1:{self.config.control_port}: {exc}"
                ) from exc
            self._control.start()
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        if self._control is not None:
            self._control.stop()
            self._control = None
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and stop_event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop may have closed meanwhile
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout_s)
        if thread.is_alive():
            log.error("simulator thread did not stop within %s s", timeout_s)
        self._thread = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> BackgroundSimulator:
        return self.start() if self._thread is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        if self.config.use_uvloop:
            try:
                import uvloop

                runner: Callable[..., Any] = uvloop.run
            except ImportError:
                log.warning("use_uvloop=True but uvloop is not installed; using asyncio")
                runner = asyncio.run
        else:
            runner = asyncio.run
        try:
            runner(self._main())
        except BaseException as exc:  # reported to start() or logged; the thread must not die silently
            if not self._ready.is_set():
                self._startup_error = exc
                self._ready.set()
            else:
                log.exception("simulator loop crashed")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        workdir = Path(self.config.workdir) if self.config.workdir is not None else self._tmpdir
        assert workdir is not None
        server = SimServer(self.config, workdir)
        await server.start()
        self._server = server
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await server.stop()

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop, server = self._loop, self._server
        if loop is None or server is None or self._thread is None:
            raise SimulatorError("simulator is not running; call start() first")

        async def run() -> T:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(CALL_TIMEOUT_S)

    @property
    def _srv(self) -> SimServer:
        if self._server is None:
            raise SimulatorError("simulator is not running; call start() first")
        return self._server

    # ---- addresses ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._srv.port

    @property
    def ws_base_url(self) -> str:
        if self.config.tls:
            return f"wss://localhost:{self.port}"
        return f"ws://{self.config.host}:{self.port}"

    @property
    def ca_file(self) -> Path:
        tls = self._srv.tls
        if tls is None:
            raise SimulatorError("the simulator runs without TLS (tls=False): there is no CA file")
        return tls.ca_file

    @property
    def control_url(self) -> str:
        if self._control is None:
            raise SimulatorError("the HTTP control endpoint is off (control_port=None)")
        return self._control.url

    # ---- faults ------------------------------------------------------------------------------------

    def drop_connections(self, connection_ids: list[int] | None = None) -> int:
        """Abrupt TCP drop (RST, no close frame) of every open connection (or of those numbered in
        `connection_ids`, as `connections()` numbers them); returns how many."""
        return self._call(self._srv.drop_connections, _ids(connection_ids))

    def close_connections(self, code: int = 1001, reason: str = "") -> int:
        return self._call(self._srv.close_connections, code, reason)

    def set_answer_pings(self, answer: bool, *, new_connections: bool = False) -> int:
        """Stop (or restart) answering client pings on open connections (and later ones if asked)."""
        return self._call(self._srv.set_answer_pings, bool(answer), new_connections)

    def stall(self, seconds: float | None = None, *, new_connections: bool = False) -> int:
        """Open connections get no data (sockets stay open, pings continue); None = until resume_data()."""
        if seconds is not None and not seconds > 0:
            raise ValueError(f"stall seconds must be > 0 or None, got {seconds!r}")
        return self._call(self._srv.stall, seconds, new_connections)

    def resume_data(self) -> int:
        return self._call(self._srv.resume_data)

    def send_malformed(self, count: int = 1) -> int:
        return self._call(self._srv.send_malformed, _count(count))

    def send_unknown_event(self, count: int = 1) -> int:
        return self._call(self._srv.send_unknown_event, _count(count))

    def send_oversized(self, size_bytes: int = 2_000_000) -> int:
        return self._call(self._srv.send_oversized, _count(size_bytes, "size_bytes"))

    def server_shutdown(self, close_after_s: float | None = None, connection_ids: list[int] | None = None) -> int:
        """Send serverShutdown to every open connection (or to those numbered in `connection_ids`); close them
        (1001) after `close_after_s` if set."""
        return self._call(self._srv.server_shutdown, close_after_s, _ids(connection_ids))

    def refuse_connections(self, seconds: float = 5.0, *, mode: str = "http_503") -> None:
        """Refuse new connections for `seconds`: HTTP 503 (mode "http_503"), HTTP 429 ("http_429", Binance's
        answer to too many attempts) or a TCP reset ("tcp_reset")."""
        if not seconds > 0:
            raise ValueError(f"refuse seconds must be > 0, got {seconds!r}")
        self._call(self._srv.refuse_connections, float(seconds), mode)

    def set_cert_mode(self, mode: str) -> None:
        self._call(self._srv.set_cert_mode, mode)

    def pause_market(self) -> None:
        """No new trade or book change from now on; the book changes already made still go out in the next depth
        diff, so after it `book()` is the book the depth stream describes."""
        self._call(self._srv.pause_market)

    def resume_market(self) -> None:
        self._call(self._srv.resume_market)

    def set_rate(self, rate_per_symbol: float) -> None:
        if not (isinstance(rate_per_symbol, int | float) and rate_per_symbol >= 0):
            raise ValueError(f"rate_per_symbol must be a number >= 0, got {rate_per_symbol!r}")
        self._call(self._srv.set_rate, float(rate_per_symbol))

    def list_symbols(self, symbols: list[str]) -> list[str]:
        """New listings: generated from now on, TRADING in exchangeInfo; returns the symbols that were new."""
        names = _symbols(symbols)
        return self._call(self._srv.list_symbols, names)

    def delist_symbols(self, symbols: list[str]) -> list[str]:
        """Delistings: no longer generated, BREAK in exchangeInfo; returns the symbols that were listed."""
        return self._call(self._srv.delist_symbols, _symbols(symbols))

    def fail_rest(self, seconds: float) -> None:
        """Every REST request (exchangeInfo and the market-data endpoints) answers 503 for `seconds` (the REST
        API unreachable); the same as rest_fault(503, seconds)."""
        if not seconds > 0:
            raise ValueError(f"fail_rest seconds must be > 0, got {seconds!r}")
        self._call(self._srv.fail_rest, float(seconds))

    def rest_fault(self, status: int, seconds: float) -> None:
        """Every REST request, on every endpoint, is answered with `status` for `seconds`: 429 or 418 with
        Retry-After = the seconds left of the fault (rounded up) and Binance's -1003 body, or 500/502/503/504 with
        a short text body. Faulted requests are logged (rest_requests) but charge no weight."""
        if status not in FAULT_STATUSES:
            raise ValueError(f"REST fault status must be one of {FAULT_STATUSES}, got {status!r}")
        if not (isinstance(seconds, int | float) and seconds > 0):
            raise ValueError(f"REST fault seconds must be > 0, got {seconds!r}")
        self._call(self._srv.rest_fault, int(status), float(seconds))

    def rest_corrupt(self, mode: str, count: int = 1) -> None:
        """The next `count` 200 answers of historicalTrades / aggTrades / depth are broken, still with status 200:
        "truncated" (the JSON cut in the middle), "wrong_symbol" (another symbol's newest items, or its book),
        "short" (the first half of the items dropped, or of each side's levels)."""
        if mode not in CORRUPT_MODES:
            raise ValueError(f"REST corruption mode must be one of {CORRUPT_MODES}, got {mode!r}")
        self._call(self._srv.rest_corrupt, mode, _count(count))

    def skip_messages(
        self, streams: list[str], count: int = 1, connection_ids: list[int] | None = None, after: int = 0
    ) -> int:
        """Silent message loss: on each open connection (or those numbered in `connection_ids`), `count` messages
        of each named stream ("btcusdt@trade") are not sent, after `after` more were (0: the very next ones; a
        few lets the hole fall inside a burst). Nothing else changes (no disconnect). They are still generated
        (generated_ids, REST history) and never counted in sent_ids. Returns how many connections were armed."""
        if isinstance(streams, str) or not all(isinstance(s, str) for s in streams):
            raise ValueError(f"streams must be a list of stream names like 'btcusdt@trade', got {streams!r}")
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise ValueError(f"after must be an integer >= 0, got {after!r}")
        return self._call(self._srv.skip_messages, list(streams), _count(count), _ids(connection_ids), after)

    def book(self, symbol: str) -> dict[str, Any]:
        """The whole current book of `symbol` as {"lastUpdateId", "bids", "asks"}, best first, with the exact
        price and quantity strings of the depth stream (compare a book rebuilt from a snapshot and diffs)."""
        return self._call(self._srv.book, symbol)

    def rest_requests(self) -> list[RestRequest]:
        """Every REST request answered (the newest 100,000), oldest first; `rest.early_requests(...)` lists
        those sent inside a ban or before a Retry-After had passed."""
        return self._call(self._srv.rest_request_log)

    def exchange_info(self) -> dict[str, Any]:
        return self._call(self._srv.exchange_info)

    def burst(self, multiplier: float, seconds: float) -> None:
        """Multiply the trade rate by `multiplier` for the next `seconds`."""
        if not (multiplier > 0 and seconds > 0):
            raise ValueError("burst multiplier and seconds must be > 0")
        self._call(self._srv.burst, float(multiplier), float(seconds))

    # ---- ground truth and status -------------------------------------------------------------------

    def generated_ids(
        self, symbol: str, stream: str = "trade", since: int | None = None, until: int | None = None
    ) -> list[int]:
        """Ids generated for symbol@stream in order; since <= event time ms < until when given."""
        return self._call(self._srv.truth.generated_ids, symbol, stream, since, until)

    def sent_ids(self, symbol: str, stream: str = "trade", connection_id: int | None = None) -> list[int]:
        """Ids handed to one connection's socket (or to any connection when None), in order."""
        return self._call(self._srv.truth.sent_ids, symbol, stream, connection_id)

    def connections(self) -> list[ConnectionInfo]:
        return self._call(self._srv.connection_infos)

    def connection_attempts(self) -> int:
        return self._call(lambda: self._srv.attempts_total)

    def status(self) -> dict[str, Any]:
        return self._call(self._srv.status)

    def replay_finished(self) -> bool:
        return self._call(lambda: self._srv.replayer is not None and self._srv.replayer.finished)


def _ids(ids: list[int] | None) -> list[int] | None:
    if ids is None:
        return None
    if isinstance(ids, int | str) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ValueError(f"connection_ids must be a list of connection numbers, got {ids!r}")
    return list(ids)


def _symbols(symbols: list[str]) -> list[str]:
    from .config import valid_symbol

    if isinstance(symbols, str) or not all(valid_symbol(s) for s in symbols):
        raise ValueError(f"symbols must be a list of lowercase symbols like 'btcusdt', got {symbols!r}")
    return list(symbols)


def _count(value: int, name: str = "count") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value

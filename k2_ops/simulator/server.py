"""The simulated exchange: a websockets asyncio server, the market tick loop and fan-out, and faults.

Everything here runs on one event loop (BackgroundSimulator gives it its own thread). Each tick
generates (or replays) everything due since the last one, in chunks with a yield to the loop between
them; every message is serialised once and its frame bytes are shared by all subscribers; each
connection gets one transport write per chunk. While a client's transport is paused its frames wait in
the connection's own queue; a client that does not read is dropped (RST, "slow consumer") once that
queue exceeds `max_send_buffer_bytes` (bounded memory; the real exchange also drops slow consumers).
`rate_per_symbol` is best effort: an overloaded simulator loses time (at most MAX_TICK_GAP_S per tick)
rather than queueing work, and the ground truth records what was really generated.

Binance's rules: server ping every `server_ping_interval_s` with a payload, close (1008) if the pong
echoing a ping has not come within `pong_timeout_s`; close (1001) after `max_lifetime_s`; more than
`max_incoming_per_s` incoming frames per `incoming_window_s` -> close (1008, "Too many requests");
at most `max_streams_per_connection` streams; more than `max_connection_attempts` handshakes within
`connection_attempt_window_s` from one IP -> HTTP 429; a handshake URL over `max_url_chars` -> HTTP 414.

REST on the same TLS endpoint: `GET /api/v3/exchangeInfo` lists every symbol the simulator generates
(status TRADING) and every delisted one (status BREAK), in Binance's format (docs/simulator.md); listings
and delistings are injected with `list_symbols` / `delist_symbols` (control endpoint). `historicalTrades`,
`aggTrades` and `depth` answer from each market's kept history and live book, with Binance's weights, budget,
429 / 418 rules and faults (rest.py holds that logic; here it is only fed and written out). A REST answer is
built on the loop thread between two fan-outs, so a depth snapshot is the book exactly as of the last
message sent. Every REST request is kept in a bounded log (`rest_requests`).

Skipped messages (`skip_messages`): after letting `after` more pass, a connection's next N messages of a stream
are generated (they are in the ground truth's generated ids and the REST history) but not written to it, and
its sent ranges are split around each one (also in the middle of a fan-out), so `sent_ids` never claims them.
"""

from __future__ import annotations

import asyncio
import functools
import http
import logging
import math
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import OPEN

from . import faults, rest
from .certs import TlsMaterial, create_tls_material
from .config import CERT_MODES, SimulatorConfig
from .connection import ConnectionInfo, ConnState, SimConnection
from .frames import combined_payload, text_frame
from .ground_truth import GroundTruth, Series
from .market import Event, SymbolMarket, quote_asset, rate_multiplier, trades_due
from .protocol import PathError, handle_message, parse_path, parse_stream
from .replay import Replayer
from .rest import RestRequest

log = logging.getLogger("k2_ops.simulator")

# A big tick is generated and sent in chunks, yielding to the loop in between so sockets keep draining.
CHUNK_EVENTS = 2_000
CHUNK_TRADES = 500  # per symbol; about 4 messages per trade
REPLAY_CHUNKS_PER_TICK = 5  # full-speed replay: at most 10,000 recorded messages per tick
MAX_TICK_GAP_S = 0.25  # an overloaded loop generates at most this much time per tick (rate is best effort)
WRITE_LIMIT = 256 * 1024  # transport buffer high-water mark; more waits in SimConnection.backlog
REST_LOG_MAX = 100_000  # REST requests kept in the request log (the oldest go first)


class SimServer:
    def __init__(self, config: SimulatorConfig, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.tls: TlsMaterial | None = create_tls_material(workdir, config.tls_hostnames) if config.tls else None
        self.faults = faults.FaultState(cert_mode=config.cert_mode)
        self.truth = GroundTruth(config.ground_truth_max_per_series)
        self.replayer = None if config.replay_file is None else Replayer(Path(config.replay_file), config.replay_speed)
        history = config.rest_history_per_symbol
        self.markets = {} if self.replayer else {s: SymbolMarket(s, config.seed, history) for s in config.symbols}
        self.carry = dict.fromkeys(self.markets, 0.0)
        # Listed as BREAK by exchangeInfo, no longer generated; REST still serves their history and last book.
        self.delisted: dict[str, SymbolMarket] = {}
        self.rest_requests = 0
        self.rest_api = rest.RestApi(
            rest.WeightLimiter(config.rest_weight_limit, config.rest_weight_window_s,
                               config.rest_violations_before_ban, config.rest_ban_s),
            lookup=self._rest_market,
            other=self._other_market,
            exchange_info=self.exchange_info,
        )
        self.rest_log: deque[RestRequest] = deque(maxlen=REST_LOG_MAX)
        # skip_messages: connection id -> {(symbol, kind): [messages still to let pass, messages still to skip]},
        # and the sent runs a skip closed during the current fan-out (flushed with the connection's write).
        self.skips: dict[int, dict[tuple[str, str], list[int]]] = {}
        self.tick_done: dict[int, list[tuple[tuple[str, str], int, int]]] = {}
        self.rate = config.rate_per_symbol
        self.market_paused = False
        self.burst_until = 0.0
        self.burst_factor = 1.0
        self.states: dict[int, ConnState] = {}
        self.closed: deque[ConnState] = deque()
        self.subscribers: dict[str, dict[int, ConnState]] = {}
        self.series: dict[tuple[str, str], Series] = {}
        self.stream_names: dict[tuple[str, str], str] = {}
        self.attempts: dict[str, deque[float]] = {}
        self.attempts_total = 0
        self.next_id = 1
        self.last_ms = 0
        self.port = 0
        self.server: Server | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started_at = 0.0
        self.ticks = 0  # completed ticks: lets tests wait for "N ticks passed" instead of sleeping
        self.tasks: set[asyncio.Task[Any]] = set()
        self.tick_task: asyncio.Task[None] | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        ssl_context = self.tls.listening_context(lambda: self.faults.cert_mode) if self.tls else None
        self.server = await serve(
            self._handler,
            self.config.host,
            self.config.port,
            ssl=ssl_context,
            compression=None,  # frames are pre-built once for all clients
            ping_interval=None,  # Binance's ping/pong rules are implemented in _keepalive
            process_request=self._process_request,
            # websockets types create_connection as a class; its docs allow a wrapper such as this partial.
            create_connection=functools.partial(SimConnection, sim=self),  # type: ignore[arg-type]
            max_size=self.config.max_incoming_message_bytes,
            close_timeout=self.config.close_timeout_s,
            write_limit=WRITE_LIMIT,
        )
        self.port = self.server.sockets[0].getsockname()[1]
        self.started_at = self.loop.time()
        if self.replayer and self.config.replay_start == "immediately":
            self.replayer.start(self.started_at)
        self.tick_task = asyncio.create_task(self._tick_loop(), name="k2-simulator-ticks")

    async def stop(self) -> None:
        """Close every connection (1001), aborting those that do not finish within close_timeout_s."""
        if self.tick_task is not None:
            self.tick_task.cancel()
        if self.server is None:
            return
        self.server.close(close_connections=False)  # stop listening; connections are closed below

        async def close_one(conn: ServerConnection) -> None:
            try:
                await asyncio.wait_for(conn.close(1001, "Simulator stopping"), self.config.close_timeout_s)
            except (TimeoutError, ConnectionClosed):
                pass
            finally:
                conn.transport.abort()  # no-op once closed; frees clients that never read

        await asyncio.gather(*(close_one(c) for c in list(self.server.connections)), return_exceptions=True)
        try:
            await asyncio.wait_for(self.server.wait_closed(), self.config.close_timeout_s + 1.0)
        except TimeoutError:
            log.warning("simulator handlers did not finish in time")
        for task in list(self.tasks):
            task.cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ---- handshake and connection handler ---------------------------------------------------------

    def refusing_with_reset(self) -> bool:
        return (
            self.faults.refuse_mode == "tcp_reset"
            and self.loop is not None
            and self.loop.time() < self.faults.refuse_until
        )

    def _count_attempt(self, ip: str, now: float) -> bool:
        """Record a handshake attempt; True if this IP is over the limit within the window."""
        self.attempts_total += 1
        limit = self.config.max_connection_attempts
        if limit is None:
            return False
        window = self.attempts.get(ip)
        if window is None:
            window = self.attempts[ip] = deque(maxlen=limit + 1)
        window.append(now)
        return len(window) > limit and now - window[0] < self.config.connection_attempt_window_s

    def exchange_info(self) -> dict[str, Any]:
        """GET /api/v3/exchangeInfo as Binance answers it (the fields the streamer and most clients read)."""
        def entry(symbol: str, status: str) -> dict[str, Any]:
            quote = quote_asset(symbol)
            upper = symbol.upper()
            return {"symbol": upper, "status": status, "baseAsset": upper[: len(upper) - len(quote)],
                    "quoteAsset": quote, "isSpotTradingAllowed": True, "permissions": ["SPOT"]}

        listed = [entry(s, "TRADING") for s in self.markets] + [entry(s, "BREAK") for s in sorted(self.delisted)]
        return {"timezone": "UTC", "serverTime": int(time.time() * 1000), "rateLimits": [],
                "exchangeFilters": [], "symbols": listed}

    def _rest_market(self, symbol: str) -> SymbolMarket | None:
        """The market of an uppercase REST symbol (listed or delisted), None if the simulator has none."""
        market = self.markets.get(symbol.lower()) or self.delisted.get(symbol.lower())
        return market if market is not None and market.upper == symbol else None

    def _other_market(self, market: SymbolMarket) -> SymbolMarket | None:
        """Another symbol's market (the wrong_symbol corruption): the first other listed one."""
        others = (m for m in (*self.markets.values(), *self.delisted.values()) if m is not market)
        return next(others, None)

    def _exchange_s(self) -> float:
        """The exchange's clock in Unix seconds (this host's plus clock_offset_s); the REST rules run on it."""
        return time.time() + self.config.clock_offset_s

    def _rest(self, connection: SimConnection, request: Request) -> Response:
        assert self.loop is not None
        self.rest_requests += 1
        split = urlsplit(request.path)
        now = self._exchange_s()
        answer = self.rest_api.handle(split.path, split.query, now)
        self.rest_log.append(RestRequest(
            time=self.loop.time(), wall_time=now, path=split.path, params=rest.parse_query(split.query)[0],
            weight=answer.weight, status=answer.status, retry_after=answer.retry_after, used_weight=answer.used,
        ))
        response = connection.respond(answer.status, answer.body)
        headers = response.headers
        del headers["Content-Type"]
        headers["Content-Type"] = answer.content_type
        for name in rest.WEIGHT_HEADERS:
            headers[name] = str(answer.used)
        if answer.retry_after is not None:
            headers["Retry-After"] = str(answer.retry_after)
        return response

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        assert self.loop is not None
        # serve() builds every connection with create_connection=SimConnection; its callbacks name the base class.
        assert isinstance(connection, SimConnection)
        if request.path.startswith("/api/"):
            return self._rest(connection, request)
        now = self.loop.time()
        remote = connection.remote_address
        over_limit = self._count_attempt(str(remote[0]) if remote else "?", now)
        if now < self.faults.refuse_until and self.faults.refuse_mode == "http_503":
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "Service unavailable (fault)\n")
        if now < self.faults.refuse_until and self.faults.refuse_mode == "http_429":
            return connection.respond(http.HTTPStatus.TOO_MANY_REQUESTS, "Too many connection attempts (fault)\n")
        if over_limit:
            return connection.respond(http.HTTPStatus.TOO_MANY_REQUESTS, "Too many connection attempts\n")
        limit = self.config.max_url_chars
        if limit is not None and len(request.path) > limit:
            return connection.respond(http.HTTPStatus.REQUEST_URI_TOO_LONG,
                                      f"URI too long ({len(request.path)} > {limit} characters)\n")
        try:
            wanted = parse_path(request.path, self.config.max_streams_per_connection)
        except PathError as exc:
            return connection.respond(exc.status, exc.message)
        state = ConnState(self.next_id, request.path, wanted.streams, wanted.combined)
        self.next_id += 1
        state.conn = connection
        connection.state_ref = state
        return None

    async def _handler(self, connection: ServerConnection) -> None:
        assert self.loop is not None
        assert isinstance(connection, SimConnection)  # as in _process_request
        state = connection.state_ref
        assert state is not None
        self.states[state.id] = state
        self.truth.sent[state.id] = state.sent_log
        connection.protocol.answer_pings = self.faults.answer_pings_on_new  # type: ignore[attr-defined]
        if self.loop.time() < self.faults.stall_new_until:
            state.stalled_until = self.faults.stall_new_until
        self._subscribe(state, state.initial_streams)
        if self.config.server_ping_interval_s is not None:
            state.tasks.append(asyncio.create_task(self._keepalive(state)))
        if self.config.max_lifetime_s is not None:
            state.timer = self.loop.call_later(self.config.max_lifetime_s, self._expire, state)
        try:
            async for message in connection:
                reply = handle_message(
                    message, tuple(state.streams), state.combined, self.config.max_streams_per_connection
                )
                if reply.unsubscribe:
                    self._unsubscribe(state, reply.unsubscribe)
                if reply.subscribe:
                    self._subscribe(state, reply.subscribe)
                if reply.combined is not None:
                    state.combined = reply.combined
                await connection.send(reply.text)
        except ConnectionClosed:
            pass
        finally:
            for task in state.tasks:
                task.cancel()
            if state.timer is not None:
                state.timer.cancel()
            self._unsubscribe(state, tuple(state.streams), keep_listed=True)
            await connection.wait_closed()
            self._record_close(state)

    def _record_close(self, state: ConnState) -> None:
        protocol = state.conn.protocol if state.conn else None
        code, reason = 1006, ""
        if protocol is not None:
            frame = protocol.close_sent or protocol.close_rcvd
            if frame is not None:
                code, reason = frame.code, frame.reason
        if state.server_reason in ("dropped", "slow consumer"):
            code = 1006
        state.closed_at = time.time()
        state.close_code = code
        state.close_reason = state.server_reason or reason
        # Keep only the small record (and its sent log) of a closed connection, not its buffers.
        state.conn = None
        state.tasks.clear()
        state.timer = None
        self.states.pop(state.id, None)
        self.skips.pop(state.id, None)
        keep = self.config.max_closed_connections_kept
        if keep == 0:
            self.truth.forget_connection(state.id)
            return
        if len(self.closed) >= keep:
            self.truth.forget_connection(self.closed.popleft().id)
        self.closed.append(state)

    def _subscribe(self, state: ConnState, streams: tuple[str, ...]) -> None:
        for name in streams:
            state.streams[name] = None
            self.subscribers.setdefault(name, {})[state.id] = state
        if streams and self.replayer and self.config.replay_start == "first_subscriber" and self.loop:
            self.replayer.start(self.loop.time())

    def _unsubscribe(self, state: ConnState, streams: tuple[str, ...], keep_listed: bool = False) -> None:
        for name in streams:
            subs = self.subscribers.get(name)
            if subs is not None:
                subs.pop(state.id, None)
                if not subs:
                    del self.subscribers[name]
            if not keep_listed:
                state.streams.pop(name, None)

    async def _keepalive(self, state: ConnState) -> None:
        """Binance's keepalive: a ping with a payload every interval; the pong must echo it in time."""
        assert self.loop is not None and state.conn is not None
        loop, conn = self.loop, state.conn
        interval = self.config.server_ping_interval_s
        timeout = self.config.pong_timeout_s
        assert interval is not None
        pending: deque[tuple[float, asyncio.Future[float]]] = deque()
        next_ping = loop.time() + interval
        last_payload_ms = 0
        try:
            while True:
                now = loop.time()
                while pending and pending[0][1].done():
                    pending.popleft()
                if pending and now >= pending[0][0]:
                    state.server_reason = "pong timeout"
                    conn.fail_now(1008, "Pong timeout")
                    return
                if now >= next_ping:
                    last_payload_ms = max(int(time.time() * 1000), last_payload_ms + 1)
                    waiter = await conn.ping(str(last_payload_ms))
                    state.pings_sent += 1
                    if timeout is not None:
                        # ping() is typed Awaitable but returns a Future: ensure_future hands it back as is.
                        pending.append((loop.time() + timeout, asyncio.ensure_future(waiter)))
                    next_ping = max(next_ping + interval, loop.time())
                wake = next_ping if not pending else min(next_ping, pending[0][0])
                await asyncio.sleep(max(wake - loop.time(), 0.0))
        except ConnectionClosed:
            return

    def _expire(self, state: ConnState) -> None:
        if state.conn is not None and state.conn.protocol.state is OPEN:
            state.server_reason = "lifetime"
            self._spawn(state.conn.close(1001, "Connection lifetime exceeded"))

    # ---- market ticks and fan-out -----------------------------------------------------------------

    async def _tick_loop(self) -> None:
        assert self.loop is not None
        loop = self.loop
        tick = self.config.tick_interval_s
        last = loop.time()
        next_tick = last
        while True:
            next_tick += tick
            delay = next_tick - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_tick = loop.time()
                await asyncio.sleep(0)
            now = loop.time()
            dt = min(now - last, MAX_TICK_GAP_S)
            last = now
            try:
                for events in self._collect(now, dt):
                    if events:
                        self._fan_out(events, loop.time())
                    # Let the loop flush sockets and serve handlers between chunks of a big tick.
                    await asyncio.sleep(0)
            except Exception:
                log.exception("simulator tick failed")
            self.ticks += 1

    def _collect(self, now: float, dt: float) -> Iterator[list[Event]]:
        """The tick's messages in chunks of about CHUNK_EVENTS."""
        if self.replayer is not None:
            for _ in range(REPLAY_CHUNKS_PER_TICK):
                events = self.replayer.due(now, CHUNK_EVENTS)
                if not events:
                    return
                yield events
            return
        # Event times never go backwards, whatever the wall clock does.
        now_ms = self.last_ms = self._now_ms()
        due = {}
        if not self.market_paused:  # paused: no new trade, but book changes already made still go out in diffs
            factor = rate_multiplier(
                now - self.started_at,
                self.config.burst_multiplier,
                self.config.burst_every_s,
                self.config.burst_duration_s,
            )
            if now < self.burst_until:
                factor *= self.burst_factor
            for symbol in self.markets:
                due[symbol], self.carry[symbol] = trades_due(self.carry[symbol], self.rate * factor, dt)
        while any(due.values()) and not self.market_paused:
            events = []
            for symbol, market in self.markets.items():
                n = min(due.get(symbol, 0), CHUNK_TRADES)  # a listing between chunks waits for the next tick
                if n:
                    events.extend(market.generate(now_ms, n))
                    due[symbol] -= n
            yield events
        events = []
        for market in self.markets.values():
            depth = market.depth_due(now_ms)
            if depth is not None:
                events.append(depth)
        yield events

    def _fan_out(self, events: list[Event], now: float) -> None:
        for state in self.states.values():
            conn = state.conn
            state.active = conn is not None and conn.protocol.state is OPEN and state.stalled_until <= now
        series_map, names, subscribers, truth = self.series, self.stream_names, self.subscribers, self.truth
        skips = self.skips
        touched: list[ConnState] = []
        for symbol, kind, ident, time_ms, payload in events:
            key = (symbol, kind)
            series = series_map.get(key)
            if series is None:
                series = series_map[key] = truth.series_for(symbol, kind)
                names[key] = f"{symbol}@{kind}"
            index = series.append(ident, time_ms)
            subs = subscribers.get(names[key])
            if not subs:
                continue
            raw_frame = wrapped_frame = None
            for state in subs.values():
                if not state.active:
                    continue
                if skips and key in skips.get(state.id, ()) and self._skip_one(state, key):
                    continue
                if state.combined:
                    if wrapped_frame is None:
                        wrapped_frame = text_frame(combined_payload(names[key], payload))
                    frame = wrapped_frame
                else:
                    if raw_frame is None:
                        raw_frame = text_frame(payload)
                    frame = raw_frame
                if not state.out:
                    touched.append(state)
                state.out.append(frame)
                run = state.tick_ranges.get(key)
                if run is None:
                    state.tick_ranges[key] = [index, index + 1]
                else:
                    run[1] = index + 1
        for state in touched:
            self._flush(state)

    def _skip_one(self, state: ConnState, key: tuple[str, str]) -> bool:
        """Whether to withhold this message from `state` (skip_messages). A withheld message closes the run of
        this stream sent so far in this fan-out, so the next message sent starts a new run and the hole is never
        recorded as sent."""
        left = self.skips[state.id]
        counts = left[key]
        if counts[0]:
            counts[0] -= 1  # still letting messages pass
            return False
        counts[1] -= 1
        if not counts[1]:
            del left[key]
            if not left:
                del self.skips[state.id]
        run = state.tick_ranges.pop(key, None)
        if run is not None:
            self.tick_done.setdefault(state.id, []).append((key, run[0], run[1]))
        return True

    def _flush(self, state: ConnState) -> None:
        conn = state.conn
        assert conn is not None
        # Runs closed by a skip come first: per stream, runs stay in generation order.
        done = self.tick_done.pop(state.id, ())
        ranges = (*done, *((key, start, end) for key, (start, end) in state.tick_ranges.items()))
        state.tick_ranges.clear()
        count = len(state.out)
        data = b"".join(state.out)
        state.out.clear()
        # The protocol object keeps no per-frame state for unfragmented sends, so pre-built frames can
        # go straight to the transport (websockets' broadcast() bypasses send() the same way).
        if not conn.send_frames(data, count, ranges):
            log.warning("connection %s reads too slowly; dropped it", state.id)
            state.server_reason = "slow consumer"

    # ---- faults (loop thread) ---------------------------------------------------------------------

    def _open_states(self, ids: list[int] | None = None) -> list[ConnState]:
        """Open connections; only those numbered in `ids` when given (a fault on chosen connections)."""
        return [s for s in self.states.values() if s.conn is not None and s.conn.protocol.state is OPEN
                and (ids is None or s.id in ids)]

    def _write_each(self, build: Any) -> int:
        """Write `build(state)` (bytes or list of bytes) to every open connection; returns how many."""
        states = self._open_states()
        for state in states:
            payloads = build(state)
            assert state.conn is not None
            state.conn.send_frames(b"".join(text_frame(p) for p in payloads))
        return len(states)

    def _now_ms(self) -> int:
        """The exchange's clock (this host's plus clock_offset_s), in ms; it never goes backwards."""
        return max(int((time.time() + self.config.clock_offset_s) * 1000), self.last_ms)

    def _fault_stream(self, state: ConnState) -> tuple[str, str | None]:
        """(symbol, stream name for the wrapper) used for fault messages on this connection."""
        first = next(iter(state.streams), None)
        parsed = parse_stream(first) if first else None
        symbol = parsed[0] if parsed else (next(iter(self.markets), "btcusdt"))
        stream = first or f"{symbol}@trade"
        return symbol, (stream if state.combined else None)

    def drop_connections(self, connection_ids: list[int] | None = None) -> int:
        states = self._open_states(connection_ids)
        for state in states:
            assert state.conn is not None
            state.server_reason = "dropped"
            state.conn.abort_with_reset()
        return len(states)

    def close_connections(self, code: int, reason: str) -> int:
        faults.check_close_code(code)
        states = self._open_states()
        for state in states:
            assert state.conn is not None
            state.server_reason = f"fault close {code}"
            self._spawn(state.conn.close(code, reason))
        return len(states)

    def set_answer_pings(self, answer: bool, new_connections: bool) -> int:
        states = self._open_states()
        for state in states:
            assert state.conn is not None
            state.conn.protocol.answer_pings = answer  # type: ignore[attr-defined]
        if new_connections:
            self.faults.answer_pings_on_new = answer
        return len(states)

    def stall(self, seconds: float | None, new_connections: bool) -> int:
        assert self.loop is not None
        until = math.inf if seconds is None else self.loop.time() + seconds
        states = self._open_states()
        for state in states:
            state.stalled_until = until
        if new_connections:
            self.faults.stall_new_until = until
        return len(states)

    def resume_data(self) -> int:
        states = list(self.states.values())
        for state in states:
            state.stalled_until = 0.0
        self.faults.stall_new_until = 0.0
        return len(states)

    def send_malformed(self, count: int) -> int:
        now_ms = self._now_ms()
        return self._write_each(lambda s: [faults.malformed(now_ms, *self._fault_stream(s))] * count)

    def send_unknown_event(self, count: int) -> int:
        now_ms = self._now_ms()
        return self._write_each(lambda s: [faults.unknown_event(now_ms, *self._fault_stream(s))] * count)

    def send_oversized(self, size_bytes: int) -> int:
        now_ms = self._now_ms()
        return self._write_each(lambda s: [faults.oversized(size_bytes, now_ms, self._fault_stream(s)[1])])

    def server_shutdown(self, close_after_s: float | None, connection_ids: list[int] | None = None) -> int:
        now_ms = self._now_ms()
        states = self._open_states(connection_ids)
        for state in states:
            assert state.conn is not None
            state.conn.send_frames(text_frame(faults.server_shutdown(now_ms, state.combined)))
        if close_after_s is not None:
            assert self.loop is not None

            def close_all() -> None:
                for state in states:
                    if state.conn is not None and state.conn.protocol.state is OPEN:
                        state.server_reason = "server shutdown"
                        self._spawn(state.conn.close(1001, "Server shutdown"))

            self.loop.call_later(close_after_s, close_all)
        return len(states)

    def refuse_connections(self, seconds: float, mode: str) -> None:
        assert self.loop is not None
        if mode not in faults.REFUSE_MODES:
            raise ValueError(f"refuse mode must be one of {faults.REFUSE_MODES}, got {mode!r}")
        self.faults.refuse_until = self.loop.time() + seconds
        self.faults.refuse_mode = mode

    def set_cert_mode(self, mode: str) -> None:
        if mode not in CERT_MODES:
            raise ValueError(f"cert mode must be one of {CERT_MODES}, got {mode!r}")
        if self.tls is None:
            raise ValueError("cert modes need the simulator to run with tls=True")
        self.faults.cert_mode = mode

    def pause_market(self) -> None:
        self.market_paused = True
        if self.replayer and self.loop:
            self.replayer.pause(self.loop.time())

    def resume_market(self) -> None:
        self.market_paused = False
        self.carry = dict.fromkeys(self.markets, 0.0)
        if self.replayer and self.loop:
            self.replayer.resume(self.loop.time())

    def set_rate(self, rate_per_symbol: float) -> None:
        self.rate = rate_per_symbol

    def list_symbols(self, symbols: list[str]) -> list[str]:
        """New listings: generated from now on and listed TRADING by exchangeInfo; returns those new."""
        added = [s for s in symbols if s not in self.markets]
        for symbol in added:
            self.markets[symbol] = SymbolMarket(symbol, self.config.seed, self.config.rest_history_per_symbol)
            self.carry[symbol] = 0.0
            self.delisted.pop(symbol, None)
        return added

    def delist_symbols(self, symbols: list[str]) -> list[str]:
        """Delistings: no longer generated, listed BREAK by exchangeInfo; returns those delisted."""
        removed = [s for s in symbols if s in self.markets]
        for symbol in removed:
            self.delisted[symbol] = self.markets.pop(symbol)
            self.carry.pop(symbol, None)
        return removed

    def fail_rest(self, seconds: float) -> None:
        self.rest_fault(503, seconds)

    def rest_fault(self, status: int, seconds: float) -> None:
        self.rest_api.set_fault(status, seconds, self._exchange_s())

    def rest_corrupt(self, mode: str, count: int) -> None:
        if mode == "wrong_symbol" and len(self.markets) + len(self.delisted) < 2:
            raise ValueError("the wrong_symbol corruption needs a second symbol to take answers from")
        self.rest_api.set_corrupt(mode, count)

    def skip_messages(
        self, streams: list[str], count: int, connection_ids: list[int] | None = None, after: int = 0
    ) -> int:
        """Arm the skip of `count` messages of each stream, after `after` more were sent, on open connections (or
        those numbered); returns how many connections were armed. Only messages a connection would be sent count
        (a stream it is not subscribed to, or a stall, delays the skip)."""
        keys = []
        for name in streams:
            parsed = parse_stream(name)
            if parsed is None:
                raise ValueError(f"invalid stream name {name!r}; expected e.g. 'btcusdt@trade'")
            keys.append(parsed)
        states = self._open_states(connection_ids)
        for state in states:
            left = self.skips.setdefault(state.id, {})
            for key in keys:
                left[key] = [after, count]
        return len(states)

    def book(self, symbol: str) -> dict[str, Any]:
        """The whole live book of a symbol (lowercase or REST uppercase) as a depth snapshot."""
        market = self._rest_market(symbol.upper())
        if market is None:
            raise KeyError(f"no market for symbol {symbol!r}")
        return market.book()

    def rest_request_log(self) -> list[RestRequest]:
        return list(self.rest_log)

    def burst(self, multiplier: float, seconds: float) -> None:
        assert self.loop is not None
        self.burst_factor = multiplier
        self.burst_until = self.loop.time() + seconds

    # ---- ground truth and status (loop thread) ----------------------------------------------------

    def connection_infos(self) -> list[ConnectionInfo]:
        states = list(self.closed) + list(self.states.values())
        return sorted((s.info() for s in states), key=lambda i: i.id)

    def status(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "open_connections": len(self.states),
            "connection_attempts": self.attempts_total,
            "rest_requests": self.rest_requests,
            "rest_answers": {str(k): v for k, v in sorted(self.rest_api.answered.items())},
            "listed_symbols": len(self.markets),
            "ticks": self.ticks,
            "generated": self.truth.counts(),
            "market_paused": self.market_paused,
            "rate_per_symbol": self.rate,
            "cert_mode": self.faults.cert_mode,
            "replay": None
            if self.replayer is None
            else {
                "file": str(self.replayer.path),
                "started": self.replayer.started,
                "finished": self.replayer.finished,
                "replayed": self.replayer.replayed,
            },
        }

"""The blue-green deployment itself: the steps, the cutover, and automatic rollback with a measured time.

Each step is a method taking and updating a `DeploymentState`, so Dagster runs them as separate ops and the
CLI runs them in a row. Any step that raises `DeploymentError` is followed by `rollback()`: the old color
keeps or resumes streaming, the new one is stopped, and the history records why and how long it took.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from k2_ops.deploy import handover, probe
from k2_ops.deploy.audit import IdAudit
from k2_ops.deploy.backend import DeploymentBackend
from k2_ops.deploy.history import DeploymentHistory, DeploymentRecord, switch_entry
from k2_ops.deploy.model import COLORS, DeployConfig, DeploymentError, DeploymentState, other_color

_log = logging.getLogger(__name__)

STEPS = (
    "build_image",
    "start_target",
    "wait_target_ready",
    "dual_operation",
    "cutover",
    "validate_target",
    "record_deployment",
)
DEDUPE_NOTE = (
    "dual mode: both colors produced during the overlap, so consumers must dedupe on "
    "(symbol, trade id); an idempotent producer does not remove duplicates between two producers"
)


class DeploymentFailed(DeploymentError):
    """The deployment failed and was rolled back (or the rollback failed too); carries the history record."""

    def __init__(self, reason: str, record: DeploymentRecord) -> None:
        super().__init__(reason)
        self.record = record


class BlueGreenDeployment:
    def __init__(
        self,
        backend: DeploymentBackend,
        history: DeploymentHistory,
        *,
        audit: Callable[[float], IdAudit] | None = None,
        log: Callable[[str], None] | None = None,
        handover_token: str | None = None,
    ) -> None:
        self.backend = backend
        self.history = history
        # The shared token the colors' POST /handover/* endpoints require (see deploy/handover.py).
        self.handover_token = handover_token
        # audit(since_epoch_seconds) -> duplicates and gaps by (symbol, trade id) in Kafka since then.
        self.audit = audit
        self.log = log or _log.info

    # ---- planning ------------------------------------------------------------------------------------------
    def active_color(self) -> str:
        """The color that produces: the history's, or before any deployment the one color that runs (e.g.
        started by `docker compose up -d`, adopted as it is), else blue."""
        if self.history.last() is not None:
            return self.history.active_color()
        running = [color for color in COLORS if self.backend.is_running(color)]
        return running[0] if len(running) == 1 else self.history.active_color()

    def plan(self, config: DeployConfig, run_id: str | None = None) -> DeploymentState:
        source = self.active_color()
        return DeploymentState(source=source, target=other_color(source), config=config, run_id=run_id)

    @contextmanager
    def _step(self, state: DeploymentState, name: str) -> Iterator[None]:
        began = time.monotonic()
        self.log(f"{name}: {state.source} -> {state.target} ({state.config.mode} mode)")
        yield
        state.steps[name] = round(time.monotonic() - began, 3)
        self.log(f"{name}: done in {state.steps[name]:.2f} s")

    def _url(self, color: str) -> str:
        return self.backend.base_url(color)

    def _alive(self, color: str, what: str) -> None:
        if reason := self.backend.exit_reason(color):
            raise DeploymentError(f"{what} ({color}) stopped: {reason}")

    def _progress(
        self, step: str, config: DeployConfig, baseline: dict[str, probe.MetricsSample]
    ) -> Callable[[], None]:
        """A callable the step's watch loop calls each poll: every `progress_interval_seconds` it logs how far
        the window is, each color's receive rate and sequence gaps since the window began."""
        window = config.dual_operation_seconds if step == "dual_operation" else config.validation_seconds
        began = min(sample.at for sample in baseline.values())
        next_at = began + config.progress_interval_seconds

        def report() -> None:
            nonlocal next_at
            now = time.monotonic()
            if now < next_at or now - began >= window:
                return
            next_at = now + config.progress_interval_seconds
            latest = {color: probe.read_metrics(self._url(color)) for color in baseline}
            rates = {color: probe.rate(baseline[color], latest[color], probe.RECEIVED) for color in baseline}
            gaps = {color: probe.increase(baseline[color], latest[color], probe.GAPS) for color in baseline}
            self.log(probe.progress_text(step, now - began, window, rates, gaps))

        return report

    # ---- steps ---------------------------------------------------------------------------------------------
    def build_image(self, state: DeploymentState) -> str:
        with self._step(state, "build_image"):
            done = self.backend.build(state.config.image)
            self.log(done)
        return done

    def start_target(self, state: DeploymentState) -> None:
        with self._step(state, "start_target"):
            if not self.backend.is_running(state.source):
                raise DeploymentError(
                    f"the active color {state.source} is not running; nothing to deploy beside "
                    f"(start it first: k2 deploy start --color {state.source})"
                )
            if self.backend.is_running(state.target):
                self.log(f"{state.target} is still running from an earlier attempt; stopping it first")
                self.backend.stop(state.target, state.config.stop_grace_seconds)
            standby = state.config.mode == "handover"
            info = self.backend.start(state.target, state.config.image, standby=standby, env=state.config.target_env)
            if not standby:
                # Dual mode: from here on both colors produce until the cutover stops the source.
                state.target_started_at = time.time()
            self.log(f"started {state.target} ({'standby' if standby else 'active'}) at {info.base_url}")

    def wait_target_ready(self, state: DeploymentState) -> float:
        with self._step(state, "wait_target_ready"):
            seconds = probe.wait_ready(
                self._url(state.target),
                state.config.ready_timeout_seconds,
                interval_s=min(0.2, state.config.poll_interval_seconds),
                abort=lambda: self.backend.exit_reason(state.target),
                what=f"new instance {state.target}",
            )
            state.measurements["ready_seconds"] = round(seconds, 3)
        return seconds

    def _wait_first_data(self, state: DeploymentState) -> float:
        url = self._url(state.target)
        began = time.monotonic()
        deadline = began + state.config.first_data_timeout_seconds
        while True:
            self._alive(state.target, "new instance")
            if probe.read_metrics(url).get(probe.RECEIVED) > 0:
                return time.monotonic() - began
            if time.monotonic() >= deadline:
                raise DeploymentError(
                    f"new instance {state.target} received no market data within "
                    f"{state.config.first_data_timeout_seconds:g} s"
                )
            time.sleep(min(0.2, state.config.poll_interval_seconds))

    def dual_operation(self, state: DeploymentState) -> dict[str, Any]:
        config = state.config
        with self._step(state, "dual_operation"):
            first_data = self._wait_first_data(state)
            source_url, target_url = self._url(state.source), self._url(state.target)
            source_before, target_before = probe.read_metrics(source_url), probe.read_metrics(target_url)
            ends = time.monotonic() + config.dual_operation_seconds
            report = self._progress(
                "dual_operation", config, {state.source: source_before, state.target: target_before}
            )
            while True:
                self._alive(state.target, "new instance")
                self._alive(state.source, "old instance")
                report()
                if time.monotonic() >= ends:
                    break
                time.sleep(min(config.poll_interval_seconds, max(0.0, ends - time.monotonic())))
            source_after, target_after = probe.read_metrics(source_url), probe.read_metrics(target_url)
            result = {
                "first_data_seconds": round(first_data, 3),
                "window_seconds": round(target_after.at - target_before.at, 3),
                "source_rate": round(probe.rate(source_before, source_after, probe.RECEIVED), 3),
                "target_rate": round(probe.rate(target_before, target_after, probe.RECEIVED), 3),
                "target_produced": probe.increase(target_before, target_after, probe.PRODUCED),
            }
            state.measurements["dual_operation"] = result
            self.log(
                f"dual operation: {state.source} {result['source_rate']} msg/s, {state.target} "
                f"{result['target_rate']} msg/s over {result['window_seconds']} s"
            )
            if problem := probe.compare_rates(result["source_rate"], result["target_rate"], config.rate_tolerance):
                raise DeploymentError(f"dual operation: {problem}")
            if config.mode == "dual" and result["window_seconds"] >= 1.0 and result["target_produced"] <= 0:
                raise DeploymentError(f"dual operation: {state.target} produced nothing to Kafka")
        return result

    def cutover(self, state: DeploymentState) -> dict[str, Any]:
        config = state.config
        with self._step(state, "cutover"):
            if config.mode == "handover":
                standby = handover.enter_standby(
                    self._url(state.source), config.handover_flush_timeout_seconds, self.handover_token
                )
                positions = state.positions = standby.positions
                self.log(f"{state.source} stopped producing after {positions}"
                         + (f"; gaps under repair handed over: {standby.repairs}" if standby.repairs else ""))
                report = handover.release(self._url(state.target), positions, self.handover_token,
                                          repairs=standby.repairs)
                state.release = report
                state.cutover_at = time.time()
                gaps = handover.release_gaps(report)
                state.measurements["handover_release_gaps"] = gaps
                if gaps:
                    raise DeploymentError(
                        f"handover: {state.target} could not continue at the next id: missing ids per stream {gaps}"
                    )
                self.log(f"{state.target} produces from the next id on: {report.get('streams')}")
            self.backend.stop(state.source, config.stop_grace_seconds)
            state.cutover_at = state.cutover_at or time.time()
            state.switches.append(switch_entry(state.cutover_at, state.source, state.target))
            self.log(f"{state.source} stopped gracefully; {state.target} is the active color")
        return {"positions": state.positions, "release": state.release}

    def validate_target(self, state: DeploymentState) -> dict[str, Any]:
        config = state.config
        with self._step(state, "validate_target"):
            url = self._url(state.target)
            before = probe.read_metrics(url)
            ends = time.monotonic() + config.validation_seconds
            report = self._progress("validate_target", config, {state.target: before})
            unready: list[str] = []
            while True:
                self._alive(state.target, "new instance")
                report()
                readiness = probe.read_readiness(url)
                # A single failed probe can be a slow answer; three in a row is not serving.
                unready = [*unready, readiness.reason()] if not readiness.ready else []
                if len(unready) >= 3:
                    raise DeploymentError(f"validation: {state.target} not ready: {unready[-1]}")
                if time.monotonic() >= ends:
                    break
                time.sleep(min(config.poll_interval_seconds, max(0.0, ends - time.monotonic())))
            after = probe.read_metrics(url)
            result = {
                "window_seconds": round(after.at - before.at, 3),
                "rate": round(probe.rate(before, after, probe.RECEIVED), 3),
                "produced": probe.increase(before, after, probe.PRODUCED),
            }
            state.measurements["validation"] = result
            if problems := probe.validation_problems(before, after, config.min_rate_per_second):
                raise DeploymentError(f"validation of {state.target}: " + "; ".join(problems))
            self.log(f"validation passed: {result}")
        return result

    def record_deployment(self, state: DeploymentState) -> DeploymentRecord:
        with self._step(state, "record_deployment"):
            self._audit(state)
            record = DeploymentRecord(
                deployment_id=state.deployment_id,
                kind="deploy",
                status="succeeded",
                from_color=state.source,
                to_color=state.target,
                active_color=state.target,
                image=state.config.image,
                mode=state.config.mode,
                started_at=state.started_at,
                run_id=state.run_id,
                steps=dict(state.steps),
                measurements=dict(state.measurements),
                switches=list(state.switches),
                overlap=_dual_overlap(state),
            )
        record.steps = dict(state.steps)
        self.history.append(record)
        return record

    def _audit(self, state: DeploymentState) -> None:
        if self.audit is None:
            return
        try:
            audit = self.audit(state.started_at)
        except DeploymentError as exc:
            state.measurements["kafka_audit_error"] = str(exc)
            self.log(f"Kafka audit failed: {exc}")
            return
        state.measurements["kafka"] = audit.to_dict()
        self.log(
            f"Kafka since the deployment began: {audit.messages} trades, {audit.duplicates} duplicates, "
            f"{audit.missing} missing in {audit.gaps} gaps"
        )
        if state.config.mode == "dual" and audit.duplicates:
            state.notes.append(DEDUPE_NOTE)
            state.measurements["note"] = DEDUPE_NOTE

    # ---- switching and rollback ----------------------------------------------------------------------------
    def _image_of(self, color: str, fallback: str) -> str:
        info = self.backend.instance(color)
        return info.image if info is not None else fallback

    def _answers(self, color: str) -> bool:
        if not self.backend.is_running(color):
            return False
        info = self.backend.instance(color)
        return info is not None and probe.read_readiness(info.base_url).status is not None

    def _mode(self, color: str) -> str | None:
        info = self.backend.instance(color)
        if info is None:
            return None
        body = probe.read_readiness(info.base_url).body
        return body.get("mode") if isinstance(body, dict) else None

    def switch(self, from_color: str, to_color: str, config: DeployConfig) -> dict[str, Any]:
        """Make `to_color` the producing instance and stop `from_color`, by exact handover when the old one
        still answers, else by (re)starting the new one. Returns what was done."""
        image = self._image_of(to_color, config.image)
        result: dict[str, Any] = {"from": from_color, "to": to_color, "image": image}
        if self._answers(from_color):
            try:
                if not self.backend.is_running(to_color):
                    self.backend.start(to_color, image, standby=True)
                probe.wait_ready(
                    self._url(to_color),
                    config.ready_timeout_seconds,
                    abort=lambda: self.backend.exit_reason(to_color),
                    what=to_color,
                )
                standby = handover.enter_standby(
                    self._url(from_color), config.handover_flush_timeout_seconds, self.handover_token
                )
                positions = standby.positions
                report = handover.release(self._url(to_color), positions, self.handover_token,
                                          repairs=standby.repairs)
                result.update(method="handover", positions=positions, gaps=handover.release_gaps(report))
                result["switched_at"] = round(time.time(), 3)
                self.backend.stop(from_color, config.stop_grace_seconds)
                return result
            except DeploymentError as exc:
                result["handover_error"] = str(exc)
                self.log(f"exact handover {from_color} -> {to_color} failed ({exc}); restarting {to_color}")
        if self.backend.is_running(to_color):
            if self._mode(to_color) == "standby":
                handover.release(self._url(to_color), None, self.handover_token)
        else:
            self.backend.start(to_color, image, standby=False)
        probe.wait_ready(
            self._url(to_color),
            config.ready_timeout_seconds,
            abort=lambda: self.backend.exit_reason(to_color),
            what=to_color,
        )
        result["switched_at"] = round(time.time(), 3)
        if self.backend.is_running(from_color):
            self.backend.stop(from_color, config.stop_grace_seconds)
        result["method"] = "restart"
        return result

    def rollback(self, state: DeploymentState, reason: str) -> DeploymentRecord:
        """Back to `state.source` after a failed step; measured, recorded; never raises itself."""
        config = state.config
        began = time.monotonic()
        self.log(f"ROLLBACK to {state.source}: {reason}")
        status, rollback_error = "rolled_back", None
        try:
            if state.cutover_done:
                result = self.switch(state.target, state.source, config)
                state.measurements["rollback"] = result
                state.switches.append(switch_entry(result["switched_at"], state.target, state.source))
            else:
                if self.backend.is_running(state.source):
                    if self._mode(state.source) == "standby":
                        # It stopped producing for a handover that did not finish: produce what it buffered.
                        handover.release(self._url(state.source), None, self.handover_token)
                else:
                    self.backend.start(state.source, self._image_of(state.source, config.image), standby=False)
                if self.backend.is_running(state.target):
                    self.backend.stop(state.target, config.stop_grace_seconds)
                state.measurements["target_stopped_at"] = round(time.time(), 3)
                probe.wait_ready(
                    self._url(state.source),
                    config.ready_timeout_seconds,
                    abort=lambda: self.backend.exit_reason(state.source),
                    what=state.source,
                )
                state.measurements["rollback"] = {"from": state.target, "to": state.source, "method": "kept"}
        except Exception as exc:
            status, rollback_error = "failed", f"{type(exc).__name__}: {exc}"
            self.log(f"ROLLBACK FAILED: {rollback_error}")
        seconds = round(time.monotonic() - began, 3)
        self.log(f"rollback {'done' if status == 'rolled_back' else 'FAILED'} in {seconds:.2f} s")
        self._audit(state)
        full_reason = reason if rollback_error is None else f"{reason}; rollback failed: {rollback_error}"
        record = DeploymentRecord(
            deployment_id=state.deployment_id,
            kind="deploy",
            status=status,
            from_color=state.source,
            to_color=state.target,
            active_color=state.source if status == "rolled_back" else state.target,
            image=state.config.image,
            mode=state.config.mode,
            started_at=state.started_at,
            run_id=state.run_id,
            reason=full_reason,
            rollback_seconds=seconds,
            steps=dict(state.steps),
            measurements=dict(state.measurements),
            switches=list(state.switches),
            overlap=_dual_overlap(state),
        )
        self.history.append(record)
        return record

    def manual_rollback(
        self, config: DeployConfig, run_id: str | None = None, reason: str = "manual rollback"
    ) -> DeploymentRecord:
        active = self.history.active_color()
        previous = self.history.previous_color()
        if previous is None:
            raise DeploymentError(
                f"nothing to roll back to: {active} is active and the last change "
                "already went back to it (see the deployment history)"
            )
        began_at, began = time.time(), time.monotonic()
        self.log(f"rollback: {active} -> {previous} ({reason})")
        result = self.switch(active, previous, config)
        seconds = round(time.monotonic() - began, 3)
        record = DeploymentRecord(
            deployment_id=f"rollback-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}",
            kind="rollback",
            status="manual_rollback",
            from_color=active,
            to_color=previous,
            active_color=previous,
            image=result["image"],
            mode="handover" if result["method"] == "handover" else "restart",
            started_at=began_at,
            run_id=run_id,
            reason=reason,
            rollback_seconds=seconds,
            measurements={"rollback": result},
            switches=[switch_entry(result["switched_at"], active, previous)],
        )
        self.history.append(record)
        self.log(f"rollback done in {seconds:.2f} s ({result['method']})")
        return record

    def ensure_running(self, color: str, config: DeployConfig) -> bool:
        """Start `color` (active) unless it runs; True if it was started. For a fresh stack. A running one is
        adopted as it is (whoever started it): a later deployment goes from it."""
        if self.backend.is_running(color):
            info = self.backend.instance(color)
            where = f"{info.base_url}, image {info.image}" if info is not None else "no address known"
            self.log(f"{color} already runs ({where}); adopted as it is")
            return False
        self.backend.start(color, config.image, standby=False)
        probe.wait_ready(
            self._url(color),
            config.ready_timeout_seconds,
            abort=lambda: self.backend.exit_reason(color),
            what=color,
        )
        return True

    # ---- all steps in a row (CLI) ------------------------------------------------------------------------
    def run(self, config: DeployConfig, run_id: str | None = None) -> DeploymentRecord:
        state = self.plan(config, run_id)
        steps: list[Callable[[DeploymentState], Any]] = [
            self.build_image,
            self.start_target,
            self.wait_target_ready,
            self.dual_operation,
            self.cutover,
            self.validate_target,
        ]
        for step in steps:
            self.run_step(state, step.__name__)
        return self.record_deployment(state)

    def run_step(self, state: DeploymentState, step: str, interrupt_reason: str | None = None) -> Any:
        """Run one step by name; if it fails, roll back and raise DeploymentFailed with the record.

        An interrupt (Ctrl-C / SIGTERM as KeyboardInterrupt, a Dagster run termination) rolls back too and is
        then raised again so the program or run can end: left alone, both colors would keep running (dual
        mode: duplicating) or neither would produce (handover). Its reason is `interrupt_reason`, by default
        "interrupted (<exception type>)".
        """
        try:
            return getattr(self, step)(state)
        except BaseException as exc:
            interrupted = not isinstance(exc, Exception)
            detail = (interrupt_reason or f"interrupted ({type(exc).__name__})") if interrupted else str(exc)
            reason = f"{step}: {detail}"
            record = self.rollback(state, reason)
            if interrupted:
                raise
            raise DeploymentFailed(reason, record) from exc


def _dual_overlap(state: DeploymentState) -> list[float] | None:
    """[start, end] of a dual-mode deployment's deliberate overlap (both colors producing), else None.

    It ends at the cutover (the source stopped) or, for a rollback before the cutover, when the target was
    stopped; a target that never started producing has none.
    """
    if state.target_started_at is None:
        return None
    end = state.cutover_at or state.measurements.get("target_stopped_at") or time.time()
    return [round(state.target_started_at, 3), round(max(end, state.target_started_at), 3)]

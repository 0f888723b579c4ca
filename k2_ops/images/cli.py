"""`k2 images build --local-bases` and `k2 compose up|down|status`: the containerised stack (docker/)."""

from __future__ import annotations

import argparse

from k2_ops.images import build, compose_stack, engine


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    images = subparsers.add_parser("images", help="build the compose stack's images")
    images_sub = images.add_subparsers(dest="images_command", required=True)
    build_parser = images_sub.add_parser(
        "build", help="build base images from Debian packages (mmdebstrap) and the local service images")
    build_parser.add_argument("--local-bases", action="store_true", required=True,
                              help="no image registry: bases from Debian bookworm packages (the only mode)")
    build_parser.set_defaults(func=run_build)

    compose = subparsers.add_parser("compose", help="the docker/compose.yaml stack on a local Docker engine")
    compose_sub = compose.add_subparsers(dest="compose_command", required=True)
    up = compose_sub.add_parser("up", help="start dockerd if needed, build images, up --wait, print the URLs")
    up.add_argument("--wait-timeout", type=float, default=420.0, help="seconds for every service to be healthy")
    up.set_defaults(func=run_up)
    down = compose_sub.add_parser("down", help="down --volumes; stop the dockerd `k2 compose up` started")
    down.set_defaults(func=run_down)


def _print_report(report: build.BuildReport) -> None:
    for tag, seconds in report.seconds.items():
        print(f"  {tag:<42} {report.sizes_mb[tag]:7.0f} MB  {seconds:6.1f} s")


def run_build(args: argparse.Namespace) -> int:
    eng = engine.ensure_engine(compose_stack.compose_run_dir())
    report = build.build_all(eng.docker, engine.compose_plugin_binary())
    _print_report(report)
    return 0


def run_up(args: argparse.Namespace) -> int:
    try:
        stack, report, seconds = compose_stack.bring_up(wait_timeout_s=args.wait_timeout, stream=True)
    except (engine.EngineError, build.ImageBuildError, RuntimeError) as exc:
        print(f"k2 compose up: {exc}")
        return 1
    _print_report(report)
    starts = stack.start_seconds()
    print(f"compose up --wait: {seconds:.1f} s; healthy after start: "
          + ", ".join(f"{name} {value:.0f} s" for name, value in sorted(starts.items())))
    compose_stack.print_urls()
    return 0


def run_down(args: argparse.Namespace) -> int:
    try:
        eng = engine.ensure_engine(compose_stack.compose_run_dir(), start=False)
    except engine.EngineError as exc:
        print(f"k2 compose down: {exc}")
        return 0
    compose_stack.ComposeStack(eng).down()
    if eng.stop():
        print("k2 compose down: stack removed; dockerd stopped")
    else:
        print("k2 compose down: stack removed (the Docker engine was not started by k2; left running)")
    return 0

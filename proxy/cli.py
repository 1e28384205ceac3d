"""`dora-proxy`: serve, demo, and cache operations.

Configuration errors stop the command with one line on stderr and exit status 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Sequence

from proxy import __version__
from proxy.settings import SETTINGS, ConfigError, Settings, load_settings

SHUTDOWN_TIMEOUT = 30.0


def _add_common(parser: argparse.ArgumentParser, *, upstream: bool = True) -> None:
    """One flag per setting (generated from the settings table), plus --config."""
    parser.add_argument("--config", dest="config", help="TOML configuration file")
    for setting in SETTINGS:
        if setting.name == "upstream_url" and not upstream:
            continue
        if setting.secret:
            continue  # secrets on a command line end up in ps and shell history
        parser.add_argument(setting.flag, dest=setting.name, help=setting.help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dora-proxy",
        description="GitLab Ultimate's DORA metrics API for every GitLab tier.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the proxy in front of a GitLab")
    _add_common(serve)

    demo = commands.add_parser("demo", help="run the proxy on a built-in fake GitLab")
    _add_common(demo, upstream=False)

    cache = commands.add_parser("cache", help="operate the cache")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    warm = cache_commands.add_parser("warm", help="prefill the cache (nightly job)")
    _add_common(warm)
    warm.add_argument("--project", action="append", default=[], metavar="ID_OR_PATH")
    warm.add_argument("--group", action="append", default=[], metavar="ID_OR_PATH")
    warm.add_argument(
        "--token-env",
        default="DORA_PROXY_WARM_TOKEN",
        help="environment variable holding the token used upstream (default %(default)s)",
    )
    for name, text in (("stats", "show cache statistics"), ("clear", "empty the cache")):
        sub = cache_commands.add_parser(name, help=text)
        _add_common(sub, upstream=False)
    return parser


def _settings_from(args: argparse.Namespace, *, require_upstream: bool) -> Settings:
    names = [setting.name for setting in SETTINGS if not setting.secret] + ["config"]
    cli = {name: getattr(args, name, None) for name in names}
    return load_settings(cli, require_upstream=require_upstream)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return serve(_settings_from(args, require_upstream=True))
        if args.command == "demo":
            return demo(args)
        from proxy import cache_cli

        settings = _settings_from(args, require_upstream=args.cache_command == "warm")
        return cache_cli.run(args, settings)
    except ConfigError as exc:
        print(f"dora-proxy: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _prepare(settings: Settings) -> None:
    from proxy.telemetry.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)


def serve(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; in-flight requests drain before exit."""
    from proxy.app import create_app
    from proxy.cache.base import StorageError
    from proxy.web.connections import serve as serve_app

    _prepare(settings)
    try:
        app = create_app(settings)
        # web.run_app, plus the open-files limit raised and a cap on client connections.
        serve_app(
            app,
            host=settings.host,
            port=settings.port,
            max_connections=settings.max_connections,
            max_client_connections=settings.max_client_connections,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            announce=lambda text: print(text, file=sys.stderr),
        )
    except StorageError as exc:
        print(f"dora-proxy: cache error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"dora-proxy: cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 2
    return 0


def demo(args: argparse.Namespace) -> int:
    """The proxy in front of a seeded fake GitLab, with ready-to-paste curl lines."""
    temp = None
    if getattr(args, "cache_dir", None) is None:
        temp = tempfile.TemporaryDirectory(prefix="dora-proxy-demo-")
        args.cache_dir = temp.name
    settings = _settings_from(args, require_upstream=False)
    _prepare(settings)
    try:
        from proxy.demo.run import run_demo

        asyncio.run(run_demo(settings))
    except KeyboardInterrupt:
        pass
    finally:
        if temp is not None:
            temp.cleanup()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

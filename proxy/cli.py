"""`dora-proxy`: serve, demo, cache operations, and setting GitLab up (check, webhooks).

Configuration errors stop the command with one line on stderr and exit status 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from proxy import __version__
from proxy.settings import SETTINGS, ConfigError, Setting, Settings, load_settings

SHUTDOWN_TIMEOUT = 30.0


def _add_common(parser: argparse.ArgumentParser, *, upstream: bool = True) -> None:
    """One flag per setting (generated from the settings table), plus --config."""
    parser.add_argument(
        "--config",
        dest="config",
        help="TOML configuration file (default: none; env: DORA_PROXY_CONFIG)",
    )
    for setting in SETTINGS:
        if setting.name == "upstream_url" and not upstream:
            continue
        if setting.secret:
            continue  # secrets on a command line end up in ps and shell history
        parser.add_argument(setting.flag, dest=setting.name, help=_flag_help(setting))


def _flag_help(setting: Setting) -> str:
    """The setting's help, its default and its environment variable (argparse-escaped)."""
    default = setting.default
    if default is None:
        shown = "unset"
    elif isinstance(default, bool):
        shown = str(default).lower()
    else:
        shown = str(default)
    text = f"{setting.help} (default: {shown}; env: {setting.env_var})"
    return text.replace("%", "%%")


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
    for kind in ("project", "group"):
        warm.add_argument(
            f"--{kind}",
            action="append",
            default=[],
            metavar="ID_OR_PATH",
            help=f"a {kind} to warm; repeat for more (default: none)",
        )
    warm.add_argument(
        "--token-env",
        default="DORA_PROXY_WARM_TOKEN",
        help="environment variable holding the token used upstream (default: %(default)s)",
    )
    for name, text in (
        ("stats", "show cache statistics (changes nothing on disk)"),
        ("clear", "empty the cache (asks first on a terminal; --yes otherwise)"),
    ):
        sub = cache_commands.add_parser(name, help=text)
        _add_common(sub, upstream=False)
        if name == "clear":
            sub.add_argument(
                "--yes",
                action="store_true",
                help="do not ask for confirmation (required without a terminal; default: ask)",
            )
    _add_setup_commands(commands)
    return parser


def _add_setup_commands(commands: Any) -> None:
    """`check` and `webhooks list|install` (proxy/admin_cli.py)."""
    from proxy.admin_cli import add_target_arguments

    check = commands.add_parser(
        "check",
        help="can this token feed the proxy? (upstream, version, scopes, role, each endpoint)",
    )
    _add_common(check)
    add_target_arguments(check)
    hooks = commands.add_parser("webhooks", help="the GitLab webhooks that keep the cache fresh")
    hook_commands = hooks.add_subparsers(dest="webhooks_command", required=True)
    listing = hook_commands.add_parser("list", help="show the hooks of a project or group")
    _add_common(listing)
    add_target_arguments(listing)
    listing.add_argument("--url", help="the proxy's public URL, to mark its hooks (default: none)")
    install = hook_commands.add_parser(
        "install",
        help="create or update the proxy's hook (deployment and issue events, webhook_secret)",
    )
    _add_common(install)
    add_target_arguments(install)
    install.add_argument(
        "--url",
        required=True,
        help="the proxy's public URL, e.g. https://dora.example.com (required, no default)",
    )
    install.add_argument(
        "--force",
        action="store_true",
        help="rewrite an existing hook (e.g. after rotating webhook_secret; default: only "
        "when its events differ)",
    )


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
        if args.command in ("check", "webhooks"):
            from proxy import admin_cli

            settings = _settings_from(args, require_upstream=True)
            if args.command == "check":
                return admin_cli.run_check(args, settings)
            return admin_cli.run_webhooks(args, settings)
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
    import structlog

    log = structlog.get_logger("proxy.serve")
    url = f"http://{settings.host}:{settings.port}"
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
            # aiohttp's plain-text banner, as one structured event (JSON with --log-format json).
            announce=lambda _banner: log.info("listening", url=url, version=__version__),
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

"""`dora-proxy check` and `dora-proxy webhooks list|install`: setting GitLab up for the proxy.

Plain words on stdout, one line per finding, each failure with its fix; exit 0 only when
everything is right (1 otherwise, 2 for a usage or configuration error). All GitLab calls go
through `proxy.upstream.admin` (python-gitlab); the token comes from a flag or, better, from an
environment variable (a flag's value shows in `ps` and shell history) and is never printed.
"""

from __future__ import annotations

import argparse
import os
import sys

from proxy.settings import ConfigError, Settings
from proxy.upstream import admin

DEFAULT_TOKEN_ENV = "GITLAB_TOKEN"
FIX_HOOK_ROLE = "managing webhooks needs the Maintainer role (or higher) on it"
FIX_HOOK_SCOPE = "managing webhooks needs a token with the api scope (read_api cannot write)"
PREMIUM_NOTE = (
    "group webhooks are a GitLab Premium/Ultimate feature; on GitLab Free the group hooks API "
    "answers 404. Install a hook on each project instead: dora-proxy webhooks install "
    "--project PATH --url URL (once per project)."
)


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """--project PATH | --group PATH, and where the token comes from."""
    target = parser.add_mutually_exclusive_group(required=True)
    for kind in ("project", "group"):
        target.add_argument(
            f"--{kind}",
            metavar="ID_OR_PATH",
            help=f"{kind} id or full path (no default: --project or --group is required)",
        )
    parser.add_argument(
        "--token-env",
        default=DEFAULT_TOKEN_ENV,
        metavar="VAR",
        help="environment variable holding the GitLab token (default: %(default)s)",
    )
    parser.add_argument(
        "--token",
        help="the GitLab token itself (default: none; prefer --token-env: a flag's value shows "
        "in ps and shell history)",
    )


def _token(args: argparse.Namespace) -> str:
    token = args.token or os.environ.get(args.token_env, "")
    if not token:
        raise ConfigError(f"no token: set {args.token_env} (or pass --token-env VAR / --token)")
    return token


def _target(args: argparse.Namespace) -> tuple[str, str]:
    return ("project", args.project) if args.project else ("group", args.group)


def _client(args: argparse.Namespace, settings: Settings):  # -> gitlab.Gitlab
    assert settings.upstream_url is not None  # load_settings(require_upstream=True)
    return admin.connect(settings.upstream_url, _token(args), settings.upstream_timeout)


def run_check(args: argparse.Namespace, settings: Settings) -> int:
    container, ref = _target(args)
    report = admin.check(_client(args, settings), container, ref)
    for finding in report.findings:
        mark = "ok  " if finding.ok else "FAIL"
        print(f"{mark} {finding.what}: {finding.detail}")
        if finding.fix:
            print(f"     fix: {finding.fix}")
    if report.ok:
        print(f"All good: this token can feed the proxy for {container} {ref}.")
        return 0
    print(f"Not ready: {sum(not f.ok for f in report.findings)} problem(s) above.")
    return 1


def run_webhooks(args: argparse.Namespace, settings: Settings) -> int:
    container, ref = _target(args)
    gl = _client(args, settings)
    try:
        if args.webhooks_command == "list":
            return _list(gl, container, ref, getattr(args, "url", None))
        secret = settings.webhook_secret
        if not secret:
            raise ConfigError(
                "webhooks install: set DORA_PROXY_WEBHOOK_SECRET (the proxy's webhook_secret; "
                "GitLab sends it back as X-Gitlab-Token)"
            )
        change = admin.install_hook(gl, container, ref, args.url, secret, force=args.force)
    except admin.UpstreamProblem as problem:
        print(f"FAIL {container} {ref}: {problem.detail}", file=sys.stderr)
        if container == "group" and problem.status == 404:
            print(f"     note: {PREMIUM_NOTE}", file=sys.stderr)
        elif problem.status == 403 and "scope" not in problem.detail:
            print(f"     fix: {FIX_HOOK_ROLE}", file=sys.stderr)
        elif problem.status == 403:
            print(f"     fix: {FIX_HOOK_SCOPE}", file=sys.stderr)
        elif problem.fix:
            print(f"     fix: {problem.fix}", file=sys.stderr)
        return 1
    print(f"{change.action} hook {change.hook_id} on {container} {ref}: {change.url}")
    print("     events: " + ", ".join(admin.HOOK_EVENTS_SHOWN))
    return 0


def _list(gl, container: str, ref: str, url: str | None) -> int:
    hooks = admin.list_hooks(gl, container, ref)
    wanted = admin.receiver_url(url) if url else None
    if not hooks:
        print(f"no hooks on {container} {ref}")
    for hook in hooks:
        mine = hook.get("url", "").endswith(admin.WEBHOOK_PATH) and wanted in (None, hook["url"])
        events = ", ".join(admin.hook_events(hook)) or "none"
        marker = "proxy" if mine else "other"
        print(f"{hook['id']:>6}  {marker}  {hook.get('url')}  events: {events}")
    return 0

"""Settings: built once at start-up; a bad value stops start-up with one line naming its source.

Each setting is given, in order of precedence, by a command-line flag (``--upstream-url``), an
environment variable (``DORA_PROXY_UPSTREAM_URL``), a key of the TOML config file
(``upstream_url``; file path from ``--config`` or ``DORA_PROXY_CONFIG``), or its default.

The `Settings` class body is the one table of settings: each field is one row (name, type,
default, help). `SETTINGS`, the flag and environment variable names, the accepted config keys and
the README table (`settings_table_markdown`) are all derived from it, so none can drift.

Every value given anywhere is checked, also one that a higher-precedence source overrides: a bad
line in the config file is a bug even while a flag hides it. An environment variable set to the
empty string counts as not set (the ``VAR=`` idiom of shells and compose files).
"""

# ruff: noqa: RUF009  (`_row(...)` returns a `dataclasses.field`, evaluated once on purpose)

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import os
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "SETTINGS",
    "ConfigError",
    "Setting",
    "Settings",
    "load_settings",
    "settings_table_markdown",
]

ENV_PREFIX = "DORA_PROXY_"
CONFIG_ENV = "DORA_PROXY_CONFIG"
CONFIG_FLAG = "--config"
_MIN_SERVER_SECRET = 16  # characters; a shorter MAC key is too easy to guess
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class ConfigError(Exception):
    """A setting is missing or wrong. The message is one line naming the key and its source."""


# --- checks: take a converted value, return it (maybe normalised) or raise ValueError(reason) ---

Check = Callable[[typing.Any], typing.Any]


def _between(low: int, high: int) -> Check:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return check


def _at_least(low: int) -> Check:
    def check(value: int) -> int:
        if value < low:
            raise ValueError(f"must be at least {low}, got {value}")
        return value

    return check


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"must be a positive number of seconds, got {value}")
    return value


def _not_negative(value: float) -> float:
    if value < 0:
        raise ValueError(f"must be zero or a positive number of seconds, got {value}")
    return value


def _one_of(*choices: str) -> Check:
    def check(value: str) -> str:
        if value.lower() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return value.lower()

    return check


def _not_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _networks(value: str) -> str:
    from proxy.web.client_address import parse_networks

    parse_networks(value)
    return value


def _optional(check: Check) -> Check:
    """For settings whose default is None: an empty string means unset."""

    def optional(value: str | None) -> str | None:
        return None if value is None or value == "" else check(value)

    return optional


def _http_url(value: str) -> str:
    """An http(s) base URL without credentials, query or /api/v4; trailing slash removed."""
    parts = urlsplit(value.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an http:// or https:// URL, got {_shown_url(value)!r}")
    if "@" in parts.netloc:
        raise ValueError("must not contain a user name or password")
    if not parts.hostname:
        raise ValueError(f"has no host name: {value!r}")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise ValueError(f"has an invalid port: {value!r}") from None
    if parts.query or parts.fragment:  # not echoed: a query may carry a token
        raise ValueError("must not have a query string or fragment")
    path = parts.path.rstrip("/")
    if path.endswith("/api/v4"):
        raise ValueError(f"give GitLab's base URL without /api/v4, got {value!r}")
    return f"{parts.scheme.lower()}://{parts.netloc}{path}"


def _redis_url(value: str) -> str:
    """redis://, rediss:// or unix://; never echoed, it may carry a password."""
    parts = urlsplit(value.strip())
    if parts.scheme.lower() not in ("redis", "rediss", "unix"):
        raise ValueError(
            f"expected a redis://, rediss:// or unix:// URL, got scheme {parts.scheme!r}"
        )
    if parts.scheme.lower() != "unix" and not parts.hostname:
        raise ValueError("has no host name")
    return value.strip()


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {value!r} (expected an IANA name)") from None
    return value


def _server_secret(value: str) -> str:
    if len(value) < _MIN_SERVER_SECRET:
        raise ValueError(f"must be at least {_MIN_SERVER_SECRET} characters long")
    return value


def _export_targets(value: str) -> str:
    """`project:PATH,group:PATH,...`; each item a kind and a non-empty id or full path."""
    for item in value.split(","):
        kind, _, path = item.strip().partition(":")
        if kind not in ("project", "group") or not path.strip():
            raise ValueError(f"expected project:PATH or group:PATH items, got {item.strip()!r}")
    return value


# --- masking for repr and logs ---


def _mask_secret(value: object) -> object:
    return None if value is None else "***"


def _shown_url(value: object) -> object:
    """The URL with any password replaced, for repr, logs and error messages."""
    if not isinstance(value, str):
        return value
    parts = urlsplit(value)
    if parts.password is None:
        return value
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def _row(
    default: object,
    help: str,
    *,
    check: Check | None = None,
    secret: bool = False,
    show: Callable[[object], object] | None = None,
) -> typing.Any:
    """One row of the settings table, as a dataclass field."""
    meta = {"help": help, "check": check, "secret": secret, "show": show}
    if secret:
        meta["show"] = _mask_secret
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable, immutable once built. Build it with `load_settings`.

    Constructing it directly (tests) skips validation but still expands `cache_dir`.
    """

    upstream_url: str | None = _row(
        None,
        "Base URL of the real GitLab, without /api/v4 (e.g. https://gitlab.example.com). "
        "Required by serve.",
        check=_optional(_http_url),
    )
    host: str = _row("127.0.0.1", "Address to listen on.", check=_not_empty)
    port: int = _row(8080, "TCP port to listen on.", check=_between(1, 65535))
    cache_dir: Path = _row(
        Path("~/.cache/gitlab-dora-proxy"),
        "Disk cache directory (created with mode 0700); also holds the generated server secret.",
    )
    cache_url: str | None = _row(
        None,
        "redis://host:port/db switches the cache to Redis; unset means the disk cache.",
        check=_optional(_redis_url),
        show=_shown_url,
    )
    cache_size_limit: int = _row(
        1073741824, "Bytes the disk cache may use before it evicts entries.", check=_at_least(1)
    )
    time_zone: str = _row(
        "UTC",
        "IANA time zone for days and months; must equal GitLab's own time zone.",
        check=_time_zone,
    )
    upstream_timeout: float = _row(10.0, "Seconds allowed per upstream HTTP call.", check=_positive)
    upstream_concurrency: int = _row(
        8, "Most upstream calls in flight at once (thread pool size).", check=_at_least(1)
    )
    request_deadline: float = _row(
        30.0, "Seconds allowed for one proxy request overall (then 504).", check=_positive
    )
    upstream_max_retries: int = _row(
        3,
        "Retries of an upstream call after a 502/503/504 or a connection error.",
        check=_at_least(0),
    )
    rate_limit_max_wait: float = _row(
        5.0,
        "Most seconds one request spends waiting out upstream rate limits before answering 503.",
        check=_not_negative,
    )
    permission_ttl: float = _row(
        60.0, "Seconds a caller's permission decision is cached.", check=_not_negative
    )
    answer_ttl_past: float = _row(
        86400.0, "Seconds an answer whose range ended before today is cached.", check=_not_negative
    )
    answer_ttl_current: float = _row(
        300.0, "Seconds an answer whose range includes today is cached.", check=_not_negative
    )
    recent_answer_ttl: float = _row(
        2.0,
        "Seconds a caller's repeated identical request is answered from process memory "
        "(never longer than permission_ttl; 0 turns it off).",
        check=_not_negative,
    )
    facts_ttl_settled: float = _row(
        604800.0, "Seconds upstream facts of settled days are cached.", check=_not_negative
    )
    facts_ttl_recent: float = _row(
        300.0, "Seconds upstream facts of recent days are cached.", check=_not_negative
    )
    facts_settle_margin: float = _row(
        3600.0,
        "Seconds after a day ends before its facts count as settled.",
        check=_not_negative,
    )
    stale_on_error: bool = _row(
        True, "Serve an expired cached answer when the upstream fails, rather than an error."
    )
    pass_through: str = _row(
        "all",
        "Requests under /api/v4/ other than the DORA routes, and GraphQL documents that are not "
        "only DORA: all (forwarded to upstream_url), read-only (GET and HEAD only, others 405) "
        "or off (404).",
        check=_one_of("all", "read-only", "off"),
    )
    public_url: str | None = _row(
        None,
        "The proxy's own base URL as clients reach it (e.g. https://dora.example.com); "
        "upstream Link and Location headers are rewritten to it. Unset: taken from each request.",
        check=_optional(_http_url),
    )
    webhook_secret: str | None = _row(
        None,
        "Secret GitLab webhooks send in X-Gitlab-Token (cache invalidation); unset turns the "
        "webhook receiver off.",
        check=_optional(_not_empty),
        secret=True,
    )
    webhook_ttl: float = _row(
        3600.0,
        "With webhook_secret set: seconds facts of recent days, environments and answers whose "
        "range includes today are cached (webhooks drop them sooner); 0 keeps facts_ttl_recent "
        "and answer_ttl_current.",
        check=_not_negative,
    )
    refresh_window: float = _row(
        28800.0,
        "With webhook_secret set: answers asked in the last this many seconds (default: a "
        "working day) are computed again in the background right after a webhook changes their "
        "facts and before their safety lifetime ends, so their next request is a cache hit "
        "(0: off; the askers' tokens stay in memory that long, or until GitLab refuses them).",
        check=_not_negative,
    )
    system_hooks: bool = _row(
        False,
        "GitLab's system hooks (membership, project and group events) are delivered to the "
        "webhook receiver (needs webhook_secret; self-managed GitLab, admin area): membership "
        "decisions are then kept until a hook reports a change (at most membership_ttl), and "
        "recently used tokens are re-checked in the background every permission_ttl.",
    )
    membership_ttl: float = _row(
        900.0,
        "With system_hooks: seconds a membership decision is kept at most (GitLab sends no hook "
        "for a group transfer or a removed group share: this bounds those).",
        check=_positive,
    )
    permission_keepalive: float = _row(
        900.0,
        "With system_hooks: seconds after its last request a token's user is still re-read in "
        "the background before its record expires (0: never; the token stays in memory only).",
        check=_not_negative,
    )
    server_secret: str | None = _row(
        None,
        "Key of the per-credential MAC (keyed BLAKE2b) that names in-memory permission decisions "
        "and recent answers (at least 16 characters); unset means one is generated on first "
        "start and stored with mode 0600 in cache_dir.",
        check=_optional(_server_secret),
        secret=True,
    )
    dora_levels_file: Path | None = _row(
        None,
        "JSON file of DORA performance level thresholds (same shape as the shipped "
        "proxy/data/dora_levels.json); unset means DORA's 2023 clusters.",
    )
    export: str | None = _row(
        None,
        "Containers whose DORA values /metrics exports as gauges: project:PATH,group:PATH,... "
        "(unset turns the export off).",
        check=_optional(_export_targets),
    )
    export_token: str | None = _row(
        None,
        "Token the export reads GitLab with (Reporter on every exported container).",
        check=_optional(_not_empty),
        secret=True,
    )
    export_window_days: int = _row(
        30, "Days the exported values cover, ending today.", check=_between(1, 180)
    )
    export_interval: float = _row(
        300.0, "Seconds between two background refreshes of the exported values.", check=_positive
    )
    log_level: str = _row(
        "info",
        "One of debug, info, warning, error.",
        check=_one_of("debug", "info", "warning", "error"),
    )
    log_format: str = _row(
        "auto",
        "One of auto (console on a terminal, else JSON), json, console.",
        check=_one_of("auto", "json", "console"),
    )
    upstream_max_pages: int = _row(
        1000,
        "Most pages one upstream listing may take (100 items each) before the request answers "
        "502; also stops on a repeated next link or a page with no new id.",
        check=_at_least(1),
    )
    upstream_max_items: int = _row(
        100000,
        "Most items one upstream listing may hold before the request answers 502.",
        check=_at_least(1),
    )
    max_computations: int = _row(
        200,
        "Most cold answers computed at once, all sharing the upstream pool (identical requests "
        "share one); past it a request needing a new one answers 503 at once, asking to retry.",
        check=_at_least(1),
    )
    permission_queue_limit: int = _row(
        100,
        "Most calls of permission checks waiting for a worker of their pool; past it new "
        "checks answer 503 at once, asking to retry.",
        check=_at_least(0),
    )
    permission_concurrency: int = _row(
        4,
        "Threads of the separate pool for permission checks (/user, the project or group, "
        "membership), so checks never queue behind data fetches.",
        check=_at_least(1),
    )
    client_check_limit: int = _row(
        2,
        "Most /user reads of unseen tokens (one per token) and anonymous lookups one client "
        "address may have in flight; up to client_check_queue more wait their turn, further "
        "ones answer 429, asking to retry (0 turns the limit off; behind a reverse proxy, list "
        "it in trusted_proxies).",
        check=_at_least(0),
    )
    client_check_queue: int = _row(
        16,
        "Checks of one client address that may wait for a turn (see client_check_limit).",
        check=_at_least(0),
    )
    client_forward_limit: int = _row(
        32,
        "Most requests one client address may have forwarded to GitLab at once (pass-through "
        "and forwarded GraphQL; all share 100 upstream connections); up to client_forward_queue "
        "more wait their turn, further ones answer 429, asking to retry (0 turns the limit off; "
        "behind a reverse proxy, list it in trusted_proxies).",
        check=_at_least(0),
    )
    client_forward_queue: int = _row(
        16,
        "Forwarded requests of one client address that may wait for a turn "
        "(see client_forward_limit).",
        check=_at_least(0),
    )
    idle_connection_timeout: float = _row(
        5.0,
        "Seconds a client connection may stay open without sending a request (first or next).",
        check=_positive,
    )
    max_connections: int = _row(
        1000,
        "Most client connections open at once (also kept below the limit of open files); more "
        "are closed as they arrive.",
        check=_at_least(1),
    )
    trusted_proxies: str = _row(
        "",
        "Comma-separated addresses or networks (CIDR) of reverse proxies in front of the proxy; "
        "for requests from them the client is the address they append to X-Forwarded-For, so "
        "per-client limits count each user, not the reverse proxy (empty: the peer address).",
        check=_networks,
    )
    max_client_connections: int = _row(
        0,
        "Most client connections open at once from one peer address; more are closed as they "
        "arrive (0: no cap by address; behind a reverse proxy every client shares its address).",
        check=_at_least(0),
    )
    cache_timeout: float = _row(
        1.0,
        "Seconds one cache operation may take; after 3 failures in a row the cache is bypassed "
        "for 5 s (requests are answered uncached) and tried again.",
        check=_positive,
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "cache_dir", Path(self.cache_dir).expanduser())

    @property
    def tz(self) -> ZoneInfo:
        """The configured time zone; it decides "today" and the day of every timestamp."""
        return ZoneInfo(self.time_zone)

    def redacted(self) -> dict[str, object]:
        """Every setting by name, secrets masked: safe to log."""
        return {s.name: s.show(getattr(self, s.name)) for s in SETTINGS}

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.redacted().items())
        return f"Settings({shown})"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of the table: name, type, default, help, plus how to check and show a value."""

    name: str
    type: type
    default: object
    help: str
    secret: bool = False
    check: Check | None = field(default=None, repr=False, compare=False)
    masker: Callable[[object], object] | None = field(default=None, repr=False, compare=False)

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def show(self, value: object) -> object:
        """The value as repr and logs may show it."""
        return self.masker(value) if self.masker else value

    def parse(self, raw: object) -> object:
        """Convert a raw value (string from flag or environment, TOML value) and check it.

        Raises ValueError with the reason, to which the caller adds the source.
        """
        value = _convert(self.type, raw, hide=self.secret)
        return self.check(value) if self.check else value


def _convert(kind: type, raw: object, *, hide: bool) -> object:
    shown = "a hidden value" if hide else repr(raw)
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _BOOLS:
            return _BOOLS[raw.strip().lower()]
        raise ValueError(f"expected true/false/1/0/yes/no, got {shown}")
    if kind is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str):
            try:
                return int(raw.strip())
            except ValueError:
                pass
        raise ValueError(f"expected an integer, got {shown}")
    if kind is float:
        value: float | None = None
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            value = float(raw)
        elif isinstance(raw, str):
            with contextlib.suppress(ValueError):
                value = float(raw.strip())
        if value is None or not math.isfinite(value):
            raise ValueError(f"expected a number, got {shown}")
        return value
    if kind is Path:
        if isinstance(raw, str | os.PathLike) and str(raw).strip():
            return Path(raw).expanduser()
        raise ValueError(f"expected a directory path, got {shown}")
    if isinstance(raw, str):
        return raw
    raise ValueError(f"expected a string, got {shown}")


def _table() -> tuple[Setting, ...]:
    hints = typing.get_type_hints(Settings)
    rows = []
    for f in dataclasses.fields(Settings):
        kind = hints[f.name]
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        rows.append(
            Setting(
                name=f.name,
                type=kind,
                default=f.default,
                help=f.metadata["help"],
                secret=f.metadata["secret"],
                check=f.metadata["check"],
                masker=f.metadata["show"],
            )
        )
    return tuple(rows)


SETTINGS: tuple[Setting, ...] = _table()
_BY_NAME = {s.name: s for s in SETTINGS}


def load_settings(
    cli: Mapping[str, object | None] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    require_upstream: bool = True,
) -> Settings:
    """Build `Settings` from flags (`cli`, keyed by setting name; None = not given), environment
    and config file, in that order of precedence, over the defaults.

    `cli` may also carry "config", the config file path. `environ` defaults to `os.environ`.
    `require_upstream=False` is for commands that never call GitLab.
    """
    cli = cli or {}
    environ = os.environ if environ is None else environ
    unknown = set(cli) - set(_BY_NAME) - {"config"}
    if unknown:
        raise TypeError(f"load_settings: unknown setting(s) {sorted(unknown)}")

    file_values, file_path = _read_config_file(cli.get("config"), environ)

    values: dict[str, object] = {}
    for setting in SETTINGS:
        given: list[tuple[str, object]] = []  # (source, raw), highest precedence first
        if cli.get(setting.name) is not None:
            given.append((setting.flag, cli[setting.name]))
        if environ.get(setting.env_var, ""):
            given.append((setting.env_var, environ[setting.env_var]))
        if setting.name in file_values:
            given.append((f"{setting.name} in {file_path}", file_values[setting.name]))
        parsed = [_parse(setting, source, raw) for source, raw in given]
        values[setting.name] = parsed[0] if parsed else setting.default

    if require_upstream and values["upstream_url"] is None:
        setting = _BY_NAME["upstream_url"]
        raise ConfigError(
            f"upstream_url: required; set {setting.flag}, {setting.env_var} "
            f"or upstream_url in the config file"
        )
    return Settings(**values)  # type: ignore[arg-type]


def _parse(setting: Setting, source: str, raw: object) -> object:
    try:
        return setting.parse(raw)
    except ValueError as error:
        raise ConfigError(_one_line(f"{source}: {error}")) from None


def _read_config_file(
    flag_path: object | None, environ: Mapping[str, str]
) -> tuple[dict[str, object], str]:
    """The config file's settings (empty without a file); refuses unknown keys."""
    source = CONFIG_FLAG if flag_path is not None else CONFIG_ENV
    path = flag_path if flag_path is not None else environ.get(CONFIG_ENV, "")
    if not path:
        return {}, ""
    path = os.fspath(Path(str(path)).expanduser())
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as error:
        raise ConfigError(f"{source}: cannot read {path!r}: {error.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(_one_line(f"{path}: not valid TOML: {error}")) from None
    for key, value in data.items():
        if key not in _BY_NAME:
            near = difflib.get_close_matches(key, _BY_NAME, n=1, cutoff=0.7)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            if isinstance(value, dict):
                hint = " (settings are top-level keys; the file has no tables)"
            raise ConfigError(_one_line(f"{path}: unknown key {key!r}{hint}"))
    return data, path


def _one_line(message: str) -> str:
    """ConfigError promises one line; a TOML parser message or a path might break it."""
    return message.replace("\r", " ").replace("\n", " ")


def settings_table_markdown() -> str:
    """The README's configuration table, one row per setting, generated from `SETTINGS`."""
    names = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}
    lines = [
        "| Config key | Flag | Environment variable | Type | Default | Description |",
        "|---|---|---|---|---|---|",
    ]
    for s in SETTINGS:
        if s.default is None:
            default = "(unset)"
        elif isinstance(s.default, bool):
            default = f"`{str(s.default).lower()}`"
        else:
            default = f"`{s.default}`"
        flag = "(none: secret)" if s.secret else f"`{s.flag}`"
        cells = [f"`{s.name}`", flag, f"`{s.env_var}`", names[s.type], default, s.help]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"

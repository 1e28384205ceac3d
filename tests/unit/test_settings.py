"""Settings: precedence, one-line errors naming the source, the example file, the README table."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from proxy.settings import (
    CONFIG_ENV,
    SETTINGS,
    ConfigError,
    Settings,
    load_settings,
    settings_table_markdown,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "dora-proxy.toml"
URL = "https://gitlab.example.com"


@pytest.fixture
def toml(tmp_path):
    """Write a config file and return its path as a string."""

    def write(text: str) -> str:
        path = tmp_path / "dora-proxy.toml"
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write


def url_unless_tested(environ: dict) -> dict:
    """The required flag, unless the case is about DORA_PROXY_UPSTREAM_URL itself."""
    return {} if "DORA_PROXY_UPSTREAM_URL" in environ else {"upstream_url": URL}


def error_of(cli=None, environ=None, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(cli or {}, environ or {}, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- defaults and precedence ---------------------------------------------------------------------


def test_defaults():
    settings = load_settings({"upstream_url": URL}, {})
    for setting in SETTINGS:
        if setting.name == "upstream_url":
            assert settings.upstream_url == URL
        elif setting.name == "cache_dir":
            assert settings.cache_dir == Path("~/.cache/gitlab-dora-proxy").expanduser()
        else:
            assert getattr(settings, setting.name) == setting.default, setting.name
    assert settings == dataclasses.replace(Settings(), upstream_url=URL)


@pytest.mark.parametrize(
    ("name", "file_value", "env_value", "flag_value", "expected"),
    [
        ("port", "1111", "2222", 3333, (3333, 2222, 1111, 8080)),
        (
            "time_zone",
            '"Europe/Berlin"',
            "America/New_York",
            "Asia/Tokyo",
            ("Asia/Tokyo", "America/New_York", "Europe/Berlin", "UTC"),
        ),
        ("stale_on_error", "false", "yes", "0", (False, True, False, True)),
        ("upstream_timeout", "2", "3.5", "4.25", (4.25, 3.5, 2.0, 10.0)),
        (
            "cache_dir",
            '"/srv/a"',
            "/srv/b",
            "/srv/c",
            (
                Path("/srv/c"),
                Path("/srv/b"),
                Path("/srv/a"),
                Path.home() / ".cache/gitlab-dora-proxy",
            ),
        ),
        (
            "cache_url",
            '"redis://file:6379/0"',
            "redis://env:6379/0",
            "redis://flag:6379/0",
            ("redis://flag:6379/0", "redis://env:6379/0", "redis://file:6379/0", None),
        ),
    ],
)
def test_precedence_flag_env_file_default(toml, name, file_value, env_value, flag_value, expected):
    path = toml(f'upstream_url = "{URL}"\n{name} = {file_value}\n')
    env_name = "DORA_PROXY_" + name.upper()
    flag = {"upstream_url": URL, name: flag_value}
    env = {env_name: env_value}
    no_file = {"upstream_url": URL}
    got = (
        getattr(load_settings({**flag, "config": path}, env), name),
        getattr(load_settings({"config": path}, env), name),
        getattr(load_settings({"config": path}, {}), name),
        getattr(load_settings(no_file, {}), name),
    )
    assert got == expected


def test_config_path_from_environment(toml):
    path = toml('upstream_url = "https://from-file.example.com"\nport = 9000\n')
    settings = load_settings({}, {CONFIG_ENV: path})
    assert (settings.upstream_url, settings.port) == ("https://from-file.example.com", 9000)


def test_config_flag_beats_config_env(toml, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text('upstream_url = "https://other.example.com"\n')
    path = toml('upstream_url = "https://flag.example.com"\n')
    settings = load_settings({"config": path}, {CONFIG_ENV: str(other)})
    assert settings.upstream_url == "https://flag.example.com"


def test_environ_defaults_to_os_environ(monkeypatch):
    for name in [s.env_var for s in SETTINGS] + [CONFIG_ENV]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DORA_PROXY_UPSTREAM_URL", URL)
    monkeypatch.setenv("DORA_PROXY_PORT", "8181")
    settings = load_settings()
    assert (settings.upstream_url, settings.port) == (URL, 8181)


def test_flag_none_means_not_given():
    settings = load_settings({"upstream_url": URL, "port": None}, {"DORA_PROXY_PORT": "9090"})
    assert settings.port == 9090


def test_empty_environment_variable_counts_as_unset(toml):
    path = toml(f'upstream_url = "{URL}"\nport = 9000\n')
    env = {"DORA_PROXY_PORT": "", "DORA_PROXY_UPSTREAM_URL": ""}
    settings = load_settings({"config": path}, env)
    assert (settings.upstream_url, settings.port) == (URL, 9000)


def test_flags_take_typed_values():
    settings = load_settings(
        {"upstream_url": URL, "port": 81, "stale_on_error": False, "upstream_timeout": 1},
        {},
    )
    assert (settings.port, settings.stale_on_error, settings.upstream_timeout) == (81, False, 1.0)
    assert isinstance(settings.upstream_timeout, float)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("false", False),
        ("1", True),
        ("0", False),
        ("yes", True),
        ("no", False),
        ("TRUE", True),
        ("No", False),
    ],
)
def test_booleans_from_environment(text, expected):
    settings = load_settings({"upstream_url": URL}, {"DORA_PROXY_STALE_ON_ERROR": text})
    assert settings.stale_on_error is expected


@pytest.mark.parametrize(("text", "expected"), [("true", True), ('"no"', False), ("false", False)])
def test_booleans_from_file(toml, text, expected):
    path = toml(f'upstream_url = "{URL}"\nstale_on_error = {text}\n')
    assert load_settings({"config": path}, {}).stale_on_error is expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://gitlab.example.com/", "https://gitlab.example.com"),
        ("HTTP://gitlab.example.com:8929", "http://gitlab.example.com:8929"),
        ("https://example.com/gitlab/", "https://example.com/gitlab"),  # relative URL root
    ],
)
def test_upstream_url_normalised(given, expected):
    assert load_settings({"upstream_url": given}, {}).upstream_url == expected


def test_upstream_not_required_when_told():
    assert load_settings({}, {}, require_upstream=False).upstream_url is None


def test_choices_are_case_insensitive():
    settings = load_settings({"upstream_url": URL}, {"DORA_PROXY_LOG_LEVEL": "DEBUG"})
    assert settings.log_level == "debug"


def test_cache_dir_expands_user(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = load_settings({"upstream_url": URL}, {"DORA_PROXY_CACHE_DIR": "~/dora"})
    assert settings.cache_dir == tmp_path / "dora"
    assert Settings(cache_dir="~/x").cache_dir == tmp_path / "x"


def test_zero_durations_allowed_where_they_mean_off():
    settings = load_settings(
        {"upstream_url": URL, "rate_limit_max_wait": "0", "permission_ttl": 0}, {}
    )
    assert (settings.rate_limit_max_wait, settings.permission_ttl) == (0.0, 0.0)


def test_tz_property():
    settings = load_settings({"upstream_url": URL, "time_zone": "Europe/Berlin"}, {})
    assert settings.tz == ZoneInfo("Europe/Berlin")


def test_settings_are_frozen():
    settings = load_settings({"upstream_url": URL}, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


def test_unknown_flag_is_a_programming_error():
    with pytest.raises(TypeError):
        load_settings({"upstream_url": URL, "prot": 1}, {})


# --- errors: one line naming key and source ------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"DORA_PROXY_PORT": "abc"}, "DORA_PROXY_PORT: expected an integer, got 'abc'"),
        ({"DORA_PROXY_PORT": "80.5"}, "DORA_PROXY_PORT: expected an integer, got '80.5'"),
        ({"DORA_PROXY_PORT": "0"}, "DORA_PROXY_PORT: must be between 1 and 65535, got 0"),
        ({"DORA_PROXY_PORT": "65536"}, "DORA_PROXY_PORT: must be between 1 and 65535, got 65536"),
        (
            {"DORA_PROXY_TIME_ZONE": "Mars/Base"},
            "DORA_PROXY_TIME_ZONE: unknown time zone 'Mars/Base' (expected an IANA name)",
        ),
        (
            {"DORA_PROXY_TIME_ZONE": "America"},  # a directory of the zone database
            "DORA_PROXY_TIME_ZONE: unknown time zone 'America' (expected an IANA name)",
        ),
        (
            {"DORA_PROXY_TIME_ZONE": "../../etc/passwd"},
            "DORA_PROXY_TIME_ZONE: unknown time zone '../../etc/passwd' (expected an IANA name)",
        ),
        (
            {"DORA_PROXY_UPSTREAM_TIMEOUT": "0"},
            "DORA_PROXY_UPSTREAM_TIMEOUT: must be a positive number of seconds, got 0.0",
        ),
        (
            {"DORA_PROXY_REQUEST_DEADLINE": "-1"},
            "DORA_PROXY_REQUEST_DEADLINE: must be a positive number of seconds, got -1.0",
        ),
        (
            {"DORA_PROXY_UPSTREAM_TIMEOUT": "nan"},
            "DORA_PROXY_UPSTREAM_TIMEOUT: expected a number, got 'nan'",
        ),
        (
            {"DORA_PROXY_ANSWER_TTL_PAST": "inf"},
            "DORA_PROXY_ANSWER_TTL_PAST: expected a number, got 'inf'",
        ),
        (
            {"DORA_PROXY_UPSTREAM_TIMEOUT": "10s"},
            "DORA_PROXY_UPSTREAM_TIMEOUT: expected a number, got '10s'",
        ),
        (
            {"DORA_PROXY_PERMISSION_TTL": "-5"},
            "DORA_PROXY_PERMISSION_TTL: must be zero or a positive number of seconds, got -5.0",
        ),
        (
            {"DORA_PROXY_UPSTREAM_CONCURRENCY": "0"},
            "DORA_PROXY_UPSTREAM_CONCURRENCY: must be at least 1, got 0",
        ),
        (
            {"DORA_PROXY_UPSTREAM_MAX_RETRIES": "-1"},
            "DORA_PROXY_UPSTREAM_MAX_RETRIES: must be at least 0, got -1",
        ),
        (
            {"DORA_PROXY_CACHE_SIZE_LIMIT": "1GB"},
            "DORA_PROXY_CACHE_SIZE_LIMIT: expected an integer, got '1GB'",
        ),
        (
            {"DORA_PROXY_STALE_ON_ERROR": "maybe"},
            "DORA_PROXY_STALE_ON_ERROR: expected true/false/1/0/yes/no, got 'maybe'",
        ),
        (
            {"DORA_PROXY_LOG_LEVEL": "verbose"},
            "DORA_PROXY_LOG_LEVEL: must be one of debug, info, warning, error, got 'verbose'",
        ),
        (
            {"DORA_PROXY_LOG_FORMAT": "xml"},
            "DORA_PROXY_LOG_FORMAT: must be one of auto, json, console, got 'xml'",
        ),
        (
            {"DORA_PROXY_UPSTREAM_URL": "gitlab.example.com"},
            "DORA_PROXY_UPSTREAM_URL: expected an http:// or https:// URL, "
            "got 'gitlab.example.com'",
        ),
        (
            {"DORA_PROXY_UPSTREAM_URL": "ftp://gitlab.example.com"},
            "DORA_PROXY_UPSTREAM_URL: expected an http:// or https:// URL, "
            "got 'ftp://gitlab.example.com'",
        ),
        (
            {"DORA_PROXY_UPSTREAM_URL": "https://gitlab.example.com/api/v4"},
            "DORA_PROXY_UPSTREAM_URL: give GitLab's base URL without /api/v4, "
            "got 'https://gitlab.example.com/api/v4'",
        ),
        (
            {"DORA_PROXY_UPSTREAM_URL": "https://gitlab.example.com:99999"},
            "DORA_PROXY_UPSTREAM_URL: has an invalid port: 'https://gitlab.example.com:99999'",
        ),
        (
            {"DORA_PROXY_CACHE_URL": "http://localhost:6379"},
            "DORA_PROXY_CACHE_URL: expected a redis://, rediss:// or unix:// URL, "
            "got scheme 'http'",
        ),
        (
            {"DORA_PROXY_HOST": " "},
            "DORA_PROXY_HOST: must not be empty",
        ),
    ],
)
def test_bad_environment_value(environ, message):
    assert error_of(url_unless_tested(environ), environ) == message


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"port": "abc"}, "--port: expected an integer, got 'abc'"),
        ({"port": True}, "--port: expected an integer, got True"),
        (
            {"time_zone": "Nowhere"},
            "--time-zone: unknown time zone 'Nowhere' (expected an IANA name)",
        ),
        ({"cache_dir": ""}, "--cache-dir: expected a directory path, got ''"),
    ],
)
def test_bad_flag_value(flags, message):
    assert error_of({"upstream_url": URL, **flags}, {}) == message


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("port = 8080.5", "port in {path}: expected an integer, got 8080.5"),
        ("port = true", "port in {path}: expected an integer, got True"),
        ("upstream_timeout = true", "upstream_timeout in {path}: expected a number, got True"),
        ("host = 123", "host in {path}: expected a string, got 123"),
        (
            'time_zone = "Mars/Base"',
            "time_zone in {path}: unknown time zone 'Mars/Base' (expected an IANA name)",
        ),
        ("prot = 8080", "{path}: unknown key 'prot' (did you mean 'port'?)"),
        ("colour = 1", "{path}: unknown key 'colour'"),
        ('config = "x.toml"', "{path}: unknown key 'config'"),
        (
            "[server]\nport = 8080",
            "{path}: unknown key 'server' (settings are top-level keys; the file has no tables)",
        ),
        ("upstream_ur = 1", "{path}: unknown key 'upstream_ur' (did you mean 'upstream_url'?)"),
        ("port = ", "{path}: not valid TOML: Invalid value (at line 2, column 8)"),
    ],
)
def test_bad_file_value(toml, line, message):
    path = toml(f'upstream_url = "{URL}"\n{line}\n')
    assert error_of({"config": path}, {}) == message.format(path=path)


def test_missing_upstream_url():
    assert error_of({}, {}) == (
        "upstream_url: required; set --upstream-url, DORA_PROXY_UPSTREAM_URL "
        "or upstream_url in the config file"
    )


def test_empty_upstream_url_in_file_is_missing(toml):
    path = toml('upstream_url = ""\n')
    assert error_of({"config": path}, {}).startswith("upstream_url: required")


def test_missing_config_file(tmp_path):
    path = str(tmp_path / "absent.toml")
    assert error_of({"upstream_url": URL}, {CONFIG_ENV: path}) == (
        f"DORA_PROXY_CONFIG: cannot read {path!r}: No such file or directory"
    )
    assert error_of({"upstream_url": URL, "config": path}, {}).startswith("--config: cannot read")


def test_bad_value_in_an_overridden_source_still_fails(toml):
    # A flag hides the bad environment value today; dropping the flag tomorrow must not surprise.
    assert error_of({"upstream_url": URL, "port": 9000}, {"DORA_PROXY_PORT": "abc"}) == (
        "DORA_PROXY_PORT: expected an integer, got 'abc'"
    )
    path = toml(f'upstream_url = "{URL}"\nport = "x"\n')
    assert (
        error_of({"config": path, "port": 9000}, {})
        == f"port in {path}: expected an integer, got 'x'"
    )


@pytest.mark.parametrize(
    ("environ", "secret"),
    [
        ({"DORA_PROXY_UPSTREAM_URL": "https://root:hunter2@gitlab.example.com"}, "hunter2"),
        (
            {"DORA_PROXY_UPSTREAM_URL": "https://gitlab.example.com/?private_token=glpat-x"},
            "glpat-x",
        ),
        ({"DORA_PROXY_UPSTREAM_URL": "ftp://root:hunter2@gitlab.example.com"}, "hunter2"),
        ({"DORA_PROXY_CACHE_URL": "http://:hunter2@localhost:6379/0"}, "hunter2"),
        ({"DORA_PROXY_SERVER_SECRET": "short-hunter2"}, "hunter2"),
    ],
)
def test_errors_do_not_echo_secrets(environ, secret):
    message = error_of(url_unless_tested(environ), environ)
    assert secret not in message
    assert next(iter(environ)) in message


def test_secret_type_error_hides_the_value(toml):
    path = toml(f'upstream_url = "{URL}"\nwebhook_secret = 12345678\n')
    assert error_of({"config": path}, {}) == (
        f"webhook_secret in {path}: expected a string, got a hidden value"
    )


def test_server_secret_length():
    message = error_of({"upstream_url": URL, "server_secret": "x" * 15}, {})
    assert message == "--server-secret: must be at least 16 characters long"
    assert load_settings({"upstream_url": URL, "server_secret": "x" * 16}, {}).server_secret


# --- secrets stay out of repr --------------------------------------------------------------------


def test_secrets_masked_in_repr():
    settings = load_settings(
        {
            "upstream_url": URL,
            "webhook_secret": "webhook-hunter2",
            "server_secret": "server-secret-hunter3",
            "cache_url": "redis://user:redis-hunter4@localhost:6379/0",
        },
        {},
    )
    assert settings.webhook_secret == "webhook-hunter2"
    for text in (repr(settings), str(settings), str(settings.redacted()), f"{settings}"):
        assert "hunter" not in text
        assert "webhook_secret='***'" in text or "'webhook_secret': '***'" in text
    assert "redis://user:***@localhost:6379/0" in repr(settings)


def test_unset_secrets_shown_as_none():
    assert "webhook_secret=None" in repr(load_settings({"upstream_url": URL}, {}))


# --- the example file and the table --------------------------------------------------------------


def test_example_config_loads():
    settings = load_settings({"config": str(EXAMPLE)}, {})
    assert settings.upstream_url == "https://gitlab.example.com"


_COMMENTED = re.compile(r"^#?\s*([a-z_]+) = (.+)$")


def test_example_config_mentions_every_setting_with_its_default():
    """Every setting appears as `# key = value`; for those with a default, value is the default."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    found = dict(m.groups() for m in map(_COMMENTED.match, lines) if m)
    assert set(found) == {s.name for s in SETTINGS}
    values = tomllib.loads("\n".join(f"{k} = {v}" for k, v in found.items()))
    for setting in SETTINGS:
        if setting.default is not None:
            assert setting.parse(values[setting.name]) == setting.parse(setting.default), (
                setting.name
            )


def test_uncommented_example_is_valid(tmp_path):
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    text = "\n".join(line.lstrip("# ") if _COMMENTED.match(line) else line for line in lines)
    path = tmp_path / "all.toml"
    path.write_text(text, encoding="utf-8")
    settings = load_settings({"config": str(path)}, {})
    assert settings.cache_url == "redis://localhost:6379/0"
    assert settings.webhook_secret == "change-me"


def test_table_lists_every_setting():
    table = settings_table_markdown()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) == len(SETTINGS)
    for setting, row in zip(SETTINGS, rows, strict=True):
        flag = "(none: secret)" if setting.secret else f"`{setting.flag}`"
        assert row.startswith(f"| `{setting.name}` | {flag} | `{setting.env_var}` |")
        assert setting.help in row


def test_table_derived_names():
    names = [f.name for f in dataclasses.fields(Settings)]
    assert [s.name for s in SETTINGS] == names
    port = next(s for s in SETTINGS if s.name == "port")
    assert (port.env_var, port.flag, port.type, port.default) == (
        "DORA_PROXY_PORT",
        "--port",
        int,
        8080,
    )
    assert [s.name for s in SETTINGS if s.secret] == [
        "webhook_secret",
        "server_secret",
        "export_token",
    ]

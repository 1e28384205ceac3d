"""Every cache key format (proxy/cache/keys.py), pinned byte for byte.

These strings are persisted (disk and Redis caches outlive a deploy): changing one silently
orphans or, worse, misreads old entries. A change here must be deliberate, with FORMAT_VERSION
bumped. No key may hold a credential: the key functions cannot even receive one.
"""

from __future__ import annotations

import hashlib
import inspect
from datetime import date

import pytest

from proxy.cache import keys as keys_module
from proxy.cache.keys import FORMAT_VERSION, CacheKeys, lock_key, namespace_for

NS = "v2|bf2ce53e4286"  # namespace_for("https://gitlab.example.com", "Europe/Berlin")
K = CacheKeys(NS)
DAY = date(2026, 3, 9)
LAST = date(2026, 3, 12)

FORMATS: dict[str, tuple[str, tuple[object, ...]]] = {
    "answer": (
        f"{NS}|answer|project:42|metric=deployment_frequency&interval=daily|g7",
        ("project", 42, "metric=deployment_frequency&interval=daily", "7"),
    ),
    "stale_answer": (f"{NS}|answer|group:9|p|stale", ("group", 9, "p")),
    "answers_generation": (f"{NS}|group:grp/sub|answers-generation", ("group", "grp/sub")),
    "membership_generation": (f"{NS}|membership-generation", ()),
    "group_projects": (f"{NS}|group:9|projects", (9,)),
    "environments": (f"{NS}|project:42|environments", (42,)),
    "deployments": (f"{NS}|project:42|deployments|2026-03-09", (42, DAY)),
    "merge_requests": (f"{NS}|project:42|merge-requests|1001", (42, 1001)),
    "incidents": (f"{NS}|project:42|incidents|g3|2026-03-09", (42, "3", DAY)),
    "incidents_generation": (f"{NS}|project:42|incidents-generation", (42,)),
    "deployments_month": (f"{NS}|project:42|deployments-month|2026-03", (42, "2026-03")),
    "incidents_month": (f"{NS}|project:42|incidents-month|g3|2026-03", (42, "3", "2026-03")),
    "young_merge_requests": (f"{NS}|project:42|merge-requests|1001|young", (42, 1001)),
    "deployments_lock": (f"{NS}|project:42|deployments-lock", (42,)),
    "deployments_run": (
        f"{NS}|project:42|deployments-run|2026-03-09|2026-03-12",
        (42, DAY, LAST),
    ),
    "incidents_lock": (f"{NS}|project:42|incidents-lock", (42,)),
    "incidents_run": (f"{NS}|project:42|incidents-run|2026-03-09|2026-03-12", (42, DAY, LAST)),
    "group_incidents_lock": (f"{NS}|group:9|incidents-lock", (9,)),
}


@pytest.mark.parametrize("method", sorted(FORMATS))
def test_key_format(method: str) -> None:
    expected, args = FORMATS[method]
    assert getattr(K, method)(*args) == expected


def test_every_key_method_has_a_pinned_format() -> None:
    public = {name for name, _ in inspect.getmembers(CacheKeys, inspect.isfunction)}
    public = {name for name in public if not name.startswith("_")}
    assert public == set(FORMATS)


def test_answer_of_another_generation_is_another_key() -> None:
    assert K.answer("project", 42, "p", "1") != K.answer("project", 42, "p", "2")
    assert K.answer("project", 42, "p", "1") != K.stale_answer("project", 42, "p")
    assert K.answers_generation("project", 42) == f"{NS}|project:42|answers-generation"


def test_namespace_format() -> None:
    assert FORMAT_VERSION == "v2"  # v2: settled days in one entry per month (issue 16)
    assert namespace_for("https://gitlab.example.com", "Europe/Berlin") == NS
    assert namespace_for("https://gitlab.example.com/", "UTC") == "v2|a68added7f14"
    # the hash is of "<upstream without trailing slash>|<time zone>", 12 hex digits
    digest = hashlib.sha256(b"https://gitlab.example.com|Europe/Berlin").hexdigest()
    assert f"v2|{digest[:12]}" == NS


def test_namespace_ignores_a_trailing_slash_but_not_the_zone_or_upstream() -> None:
    base = namespace_for("https://gitlab.example.com", "UTC")
    assert namespace_for("https://gitlab.example.com/", "UTC") == base
    assert namespace_for("https://gitlab.example.com", "Europe/Berlin") != base
    assert namespace_for("https://gitlab.example.org", "UTC") != base


def test_lock_key_format() -> None:
    assert lock_key(f"{NS}|project:42|environments") == f"{NS}|project:42|environments|lock"


# What a key may be built from: ids, paths, days, the answer's params and generations. None of
# these names a credential; a new parameter must be added here on purpose.
ALLOWED_INPUTS = {
    "self",
    "namespace",
    "upstream_url",
    "time_zone",
    "container",
    "container_id",
    "ref",
    "params",
    "generation",
    "project_id",
    "group_id",
    "deployment_id",
    "day",
    "month",
    "first",
    "last",
    "key",
    "parts",
}


def _key_functions() -> list[tuple[str, object]]:
    functions = [
        (f"CacheKeys.{name}", f) for name, f in inspect.getmembers(CacheKeys, inspect.isfunction)
    ]
    functions += [(name, f) for name, f in inspect.getmembers(keys_module, inspect.isfunction)]
    return functions


@pytest.mark.parametrize(("name", "function"), _key_functions())
def test_no_key_function_takes_a_credential(name: str, function) -> None:
    parameters = set(inspect.signature(function).parameters)
    assert parameters <= ALLOWED_INPUTS, f"{name} takes {parameters - ALLOWED_INPUTS}"
    assert not {p for p in parameters if any(w in p for w in ("token", "secret", "cred", "auth"))}


def test_keys_hold_exactly_their_inputs() -> None:
    """A key is built from its inputs and the namespace only: nothing leaks in from elsewhere."""
    for method, (expected, args) in FORMATS.items():
        rest = expected.removeprefix(f"{NS}|")
        assert rest != expected, method
        for arg in args:
            text = arg.isoformat() if isinstance(arg, date) else str(arg)
            assert text in rest, (method, arg)

"""The redaction processor masks credentials wherever they hide in an event."""

from __future__ import annotations

import pytest

from proxy.telemetry.redaction import REDACTED, redact


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("private_token", "glpat-abc", REDACTED),
        ("PRIVATE-TOKEN", "glpat-abc", REDACTED),
        ("authorization", "Bearer abc", REDACTED),
        ("query", "metric=x&private_token=glpat-abc&y=1", f"metric=x&private_token={REDACTED}&y=1"),
        ("query", "ACCESS_TOKEN=abc", f"ACCESS_TOKEN={REDACTED}"),
        ("line", "Authorization: Bearer glpat-abc", f"Authorization: Bearer {REDACTED}"),
        ("line", "Authorization: basic Zm9vOmJhcg==", f"Authorization: basic {REDACTED}"),
        ("line", "PRIVATE-TOKEN: glpat-abc", f"PRIVATE-TOKEN: {REDACTED}"),
        ("headers", {"Job-Token": "abc", "Accept": "x"}, {"Job-Token": REDACTED, "Accept": "x"}),
        ("nested", ["ok", {"cookie": "s"}], ["ok", {"cookie": REDACTED}]),
        ("path", "/api/v4/projects/11/dora/metrics", "/api/v4/projects/11/dora/metrics"),
        ("status", 200, 200),
    ],
)
def test_redact(field: str, value: object, expected: object) -> None:
    assert redact(None, "info", {"event": "e", field: value})[field] == expected

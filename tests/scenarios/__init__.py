"""The 21 acceptance scenarios of `gitlab-dora-semantics.md` §10 as data.

`SCENARIOS` is built at import; S2 depends on today's date, so runners that may cross midnight
call `scenarios(today)` (or `s2(today)`) at test time instead.
"""

from __future__ import annotations

from datetime import date

from .base import Case, Scenario
from .s01_s05 import S1, S3, S4, S5, minus_months, s2, today_utc
from .s06_s10 import S6, S7, S8, S9, S10
from .s11_s15 import S11, S12, S13, S14, S15
from .s16_s21 import S16, S17, S18, S19, S20, S21_TOKYO, S21_UTC


def scenarios(today: date | None = None) -> tuple[Scenario, ...]:
    """Every scenario, S2 computed for `today` (default: today in UTC)."""
    return (
        S1,
        s2(today or today_utc()),
        S3,
        S4,
        S5,
        S6,
        S7,
        S8,
        S9,
        S10,
        S11,
        S12,
        S13,
        S14,
        S15,
        S16,
        S17,
        S18,
        S19,
        S20,
        S21_UTC,
        S21_TOKYO,
    )


SCENARIOS: tuple[Scenario, ...] = scenarios()

__all__ = ["SCENARIOS", "Case", "Scenario", "minus_months", "s2", "scenarios", "today_utc"]

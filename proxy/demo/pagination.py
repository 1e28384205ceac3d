"""GitLab's offset-pagination headers (Link, X-Page, X-Total…), built as GitLab builds them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from urllib.parse import urlencode

# GitLab stops counting above this many records: no X-Total, X-Total-Pages or rel="last".
COUNT_LIMIT = 10_000


def pagination_headers(
    base_url: str, query: Sequence[tuple[str, str]], page: int, per_page: int, total: int
) -> dict[str, str]:
    """GitLab's offset-pagination headers for one page of `total` records.

    `base_url` is scheme, host and raw path; `query` the request's parameters in order (page and
    per_page are replaced). Above COUNT_LIMIT records the totals and rel="last" are left out, as
    GitLab does.
    """
    total_pages = max(1, math.ceil(total / per_page))
    counted = total <= COUNT_LIMIT
    next_page = page + 1 if page < total_pages else None
    prev_page = page - 1 if page > 1 else None

    def link(target: int) -> str:
        params = [(k, v) for k, v in query if k not in ("page", "per_page")]
        params += [("page", str(target)), ("per_page", str(per_page))]
        return f"{base_url}?{urlencode(params)}"

    links: list[str] = []
    if prev_page is not None:
        links.append(f'<{link(prev_page)}>; rel="prev"')
    if next_page is not None:
        links.append(f'<{link(next_page)}>; rel="next"')
    links.append(f'<{link(1)}>; rel="first"')
    if counted:
        links.append(f'<{link(total_pages)}>; rel="last"')
    headers = {
        "Link": ", ".join(links),
        "X-Page": str(page),
        "X-Per-Page": str(per_page),
        "X-Next-Page": str(next_page) if next_page else "",
        "X-Prev-Page": str(prev_page) if prev_page else "",
    }
    if counted:
        headers["X-Total"] = str(total)
        headers["X-Total-Pages"] = str(total_pages)
    return headers

"""The upstream GitLab, behind one door: the only package that imports python-gitlab or requests.

- `client.Upstream`: the bounded, retrying transport (one per proxy process);
- `session.UpstreamSession`: one caller's typed fetches (`Upstream.session(credential)`);
- `endpoints`: GitLab's JSON turned into fact records (pure);
- `retry`: when and how long to wait before trying again (pure);
- `calls`: the per-request bookkeeping the access log reads.
"""

from proxy.upstream.calls import CURRENT_STATS, CallObserver, CallStats, count_upstream_calls
from proxy.upstream.client import Upstream, UpstreamStatus
from proxy.upstream.session import UpstreamSession

__all__ = [
    "CURRENT_STATS",
    "CallObserver",
    "CallStats",
    "Upstream",
    "UpstreamSession",
    "UpstreamStatus",
    "count_upstream_calls",
]

"""The fake GitLab and the demo world: a feature of `dora-proxy demo` and of the tests.

A real aiohttp server (server.py) over a `World` (world.py) of users, groups, projects,
deployments and incidents, with GitLab's visibility rules (access.py), parameter checks
(params.py), pagination (pagination.py), error bodies (replies.py), route table (routes.py),
its own time helpers (times.py) and switchable faults (faults.py). seed.py builds the demo's
world, run.py runs the demo. Nothing under `proxy/` outside this package imports it, except
the `demo` command, lazily.
"""

from proxy.demo.faults import STATUS_RESET, Call, Faults
from proxy.demo.pagination import COUNT_LIMIT, pagination_headers
from proxy.demo.routes import DATA_KINDS, route_for
from proxy.demo.server import FakeGitLab
from proxy.demo.world import World

__all__ = [
    "COUNT_LIMIT",
    "DATA_KINDS",
    "STATUS_RESET",
    "Call",
    "FakeGitLab",
    "Faults",
    "World",
    "pagination_headers",
    "route_for",
]

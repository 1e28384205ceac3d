"""The fake GitLab and the demo world: used by tests, bench and `dora-proxy demo`, never by `serve`.

Import the modules themselves (`proxy.demo.server`, `proxy.demo.world`): this package re-exports
nothing, so importing it costs nothing.
"""

__all__: list[str] = []

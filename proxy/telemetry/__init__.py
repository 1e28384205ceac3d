"""Prometheus metrics, the access log, the structlog set-up and credential redaction.

Import the modules themselves (`proxy.telemetry.prometheus`, …): this package re-exports nothing.
"""

__all__: list[str] = []

"""The HTTP edge: routing and error rendering, the handlers, webhooks, the OpenAPI document.

Import the modules themselves (`proxy.web.routing`, …): this package re-exports nothing.
"""

__all__: list[str] = []

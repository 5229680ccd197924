"""The gateway's HTTP and WebSocket handlers, one module per area of the API.

Each module ends with ``default_handlers`` (its routes); ``base`` holds what every handler shares:
the caller, the declared ``access`` of each method, and the one JSON error shape.
"""

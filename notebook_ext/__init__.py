"""The jupyter_server extension: point the user's Jupyter server at the cellgate gateway.

Enable it with ``--ServerApp.jpserver_extensions='{"cellgate.notebook_ext": true}'`` (or in a
``jupyter_server_config.d/*.json`` file). See ``docs/notebook_ext.md``.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import CellgateExtension

    return [{"module": "cellgate.notebook_ext.app", "app": CellgateExtension}]

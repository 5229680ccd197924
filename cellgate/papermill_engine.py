"""papermill against a gated kernel: ``papermill in.ipynb out.ipynb --engine cellgate -k TARGET -p x 1``.

The ``cellgate`` engine (registered through papermill's ``papermill.engine`` entry point) is
papermill's own nbclient engine with the kernel on the cellgate gateway (``gated_kernel``): every
cell is submitted through the gate as JupyterLab submits it, a cell that needs review waits for it,
and a rejection fails the run with the reviewer's reason (papermill's error cell shows it).

papermill writes the parameters into the notebook's text. For Python its translator writes
literals. For SQL that text would be code, so the ``sql`` translator registered here
(``papermill_sql.SQLParameters``) writes a cell of comment lines the gateway reads instead: the values are then
bound by the database driver wherever a later cell says ``{{ name }}`` (``gateway/session_params.py``).
"""

from __future__ import annotations

# Loaded by papermill itself (papermill.engines reads its entry points while it is imported): import
# papermill first, not this module (importing this one first makes papermill load it half-made).

from typing import Any

from papermill.engines import NBClientEngine

from . import papermill_sql  # noqa: F401 - registers the SQL translator
from .gated_kernel import GatedKernelManager


class CellgateEngine(NBClientEngine):  # type: ignore[misc]  # papermill has no type hints
    @classmethod
    def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
        kwargs.setdefault("kernel_manager_class", GatedKernelManager)
        return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)



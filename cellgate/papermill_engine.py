"""papermill against a gated kernel: ``papermill in.ipynb out.ipynb --engine cellgate -k TARGET -p x 1``.

The ``cellgate`` engine (registered through papermill's ``papermill.engine`` entry point) is
papermill's own nbclient engine with the kernel on the cellgate gateway (``gated_kernel``): every
cell is submitted through the gate as JupyterLab submits it, a cell that needs review waits for it,
and a rejection fails the run with the reviewer's reason (papermill's error cell shows it).

papermill writes the parameters into the notebook's text. That is fine for Python (its translator
writes literals), not for SQL, where a value pasted into the text would be code: the ``cellgate``
engine refuses a SQL notebook with parameters and says to run it as one task instead
(``cellgate run -f nb.ipynb -t TARGET -p k=v``), where the driver binds every value.
"""

from __future__ import annotations

from typing import Any

from papermill.engines import NBClientEngine
from papermill.exceptions import PapermillException
from papermill.translators import Translator, papermill_translators

from .gated_kernel import GatedKernelManager


SQL_REFUSED = ("cellgate: a SQL notebook's values are bound by the database driver, never written into its SQL, "
               "so papermill cannot inject them: run it as one task with `cellgate run -f NOTEBOOK.ipynb -t TARGET "
               "-p name=value` (or add it to the template repository), where every value is bound")


class RefusingSQLTranslator(Translator):  # type: ignore[misc]  # papermill has no type hints
    """papermill's translator for SQL kernels: it refuses (see the module docstring)."""

    @classmethod
    def codify(cls, parameters: Any, comment: str = "Parameters") -> str:
        raise PapermillException(SQL_REFUSED)


class CellgateEngine(NBClientEngine):  # type: ignore[misc]  # papermill has no type hints
    @classmethod
    def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
        kwargs.setdefault("kernel_manager_class", GatedKernelManager)
        return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)


papermill_translators.register("sql", RefusingSQLTranslator)

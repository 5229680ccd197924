"""A notebook as a task's code: rendered with a run's values, in one canonical form, cell by cell.

A notebook task's ``code`` is the rendered notebook in nbformat's own canonical JSON
(``nbformat.writes``: sorted keys, outputs and execution counts cleared), so the approval, which
binds to the hash of a task's code, binds to the hash of the rendered notebook. Values stay data:

- Python: papermill injects them (``parameterize_notebook``: a cell tagged ``injected-parameters``
  after the one tagged ``parameters``) through :func:`python_literals`, a translator that writes
  each value as its Python literal (``repr``; papermill's own escapes strings by hand);
- SQL: each ``{{ name }}`` becomes a marker bound by the driver, as in a SQL template
  (``gateway/templates/render.py``), checked cell by cell; papermill's record of the values is
  kept in ``metadata.papermill.parameters``, and nothing is pasted into the SQL.

:func:`code_cells` is what runs: every code cell with text, in order; :func:`reviewable` is the
text reviewers read (each cell under a ``-- cell N`` / ``# cell N`` line).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import nbformat

# nbformat and papermill are imported where they are used: importing nbformat imports jsonschema
# and its format checkers (over a second of CPU), which every gateway process and admin command
# would pay at start while only a notebook's rendering and its executed copy need them. Reading a
# task's own (canonical) notebook for its cells is plain JSON.

#: the papermill translator names cellgate registers (kernel names papermill looks up first)
PYTHON_TRANSLATOR = "cellgate-python"


class NotebookError(ValueError):
    """A notebook that cannot run as a task; the message says what is wrong with it."""


@functools.cache
def python_literals() -> type:
    """papermill's Python translator with every string written by ``repr`` (a literal Python reads
    back as exactly that string, whatever quotes, backslashes or newlines it holds), registered
    with papermill as :data:`PYTHON_TRANSLATOR`."""
    from papermill.translators import PythonTranslator, papermill_translators

    class PythonLiterals(PythonTranslator):  # type: ignore[misc]  # papermill has no type hints
        @classmethod
        def translate_str(cls, val: str) -> str:
            return repr(val)

        @classmethod
        def translate_escaped_str(cls, str_val: Any) -> str:
            return repr(str(str_val))

        @classmethod
        def codify(cls, parameters: Mapping[str, Any], comment: str = "Parameters") -> str:
            # papermill's own runs black over the cell when it is installed: the literals stay as written here
            return "".join([f"{cls.comment(comment)}\n", *(f"{cls.assign(k, cls.translate(v))}\n" for k, v in parameters.items())])

    papermill_translators.register(PYTHON_TRANSLATOR, PythonLiterals)
    return PythonLiterals


@dataclass(frozen=True)
class Cell:
    index: int      # its position in the notebook's cells
    number: int     # 1-based among the code cells that run
    source: str


def load(text: str) -> nbformat.NotebookNode:
    import nbformat

    try:
        nb = nbformat.reads(text, as_version=4)  # type: ignore[no-untyped-call]
        nbformat.validate(nb)
    except Exception as exc:  # noqa: BLE001 - nbformat raises many kinds for a bad file
        raise NotebookError(f"not a notebook nbformat can read: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    return cast(nbformat.NotebookNode, nb)


def canonical(nb: nbformat.NotebookNode) -> str:
    """The notebook as a task's code: nbformat's JSON with every code cell's outputs cleared."""
    import nbformat

    nb = nbformat.from_dict(json.loads(json.dumps(nb)))  # type: ignore[no-untyped-call]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    if not code_cells(nb):
        raise NotebookError("the notebook has no code cell to run")
    return nbformat.writes(nb)  # type: ignore[no-untyped-call,no-any-return]


def _text(source: str | list[str]) -> str:
    """A cell's source: nbformat's JSON may split it into lines."""
    return source if isinstance(source, str) else "".join(source)


def code_cells(nb: Mapping[str, Any]) -> list[Cell]:
    """The code cells with text, in order (of a ``NotebookNode`` or of the notebook's plain JSON)."""
    found: list[Cell] = []
    for index, cell in enumerate(nb["cells"]):
        source = _text(cell.get("source", ""))
        if cell.get("cell_type") == "code" and source.strip():
            found.append(Cell(index=index, number=len(found) + 1, source=source))
    return found


def read(code: str) -> nbformat.NotebookNode:
    """A notebook task's own code: canonical and validated when it was rendered, so read without
    validating again (nbformat's schema check is most of the cost of reading one)."""
    import nbformat

    found: nbformat.NotebookNode = nbformat.reads(code, as_version=4)  # type: ignore[no-untyped-call]
    return found


def _plain(code: str) -> dict[str, Any]:
    """A notebook task's own code as plain JSON (it is nbformat's canonical JSON: see :func:`canonical`)."""
    found: dict[str, Any] = json.loads(code)
    return found


def cells_of(code: str) -> list[Cell]:
    """The cells a notebook task's code runs."""
    return code_cells(_plain(code))


def language(nb: Mapping[str, Any]) -> str:
    meta = nb.get("metadata", {})
    return str(meta.get("kernelspec", {}).get("language") or meta.get("language_info", {}).get("name") or "")


def reviewable(code: str) -> str:
    """What reviewers read of a notebook task: its code cells, each under a line naming it."""
    nb = _plain(code)
    mark = "--" if language(nb) == "sql" else "#"
    parts = []
    for cell in code_cells(nb):
        tags = nb["cells"][cell.index].get("metadata", {}).get("tags", [])
        tag = f" ({', '.join(t for t in tags if t in ('parameters', 'injected-parameters'))})" if set(tags) & {
            "parameters", "injected-parameters"} else ""
        parts.append(f"{mark} cell {cell.number}{tag}\n{cell.source.rstrip()}\n")
    return "\n".join(parts)


def inject_python(nb: nbformat.NotebookNode, values: Mapping[str, Any]) -> nbformat.NotebookNode:
    """papermill's injection of ``values`` (plain JSON values) after the ``parameters`` cell."""
    import nbformat
    from papermill.parameterize import parameterize_notebook

    python_literals()
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))  # type: ignore[no-untyped-call]
    for cell in nb.cells:  # as papermill's own loading leaves a notebook
        cell.metadata.setdefault("tags", [])
    nb.metadata.setdefault("papermill", {})
    found: nbformat.NotebookNode = parameterize_notebook(nb, dict(values), kernel_name=PYTHON_TRANSLATOR,
                                                         language="python")
    return found

"""papermill's parameters cell for SQL kernels (registered as papermill's ``sql`` translator).

papermill writes parameters into a notebook's text; for SQL that text would be code. This
translator writes comment lines the gateway reads instead (``gateway/session_params.py``), and the
database driver binds each value where a later cell says ``{{ name }}``.
"""

from __future__ import annotations

import json
from typing import Any

from papermill.translators import Translator, papermill_translators

HEADER = "-- cellgate parameters"


class SQLParameters(Translator):  # type: ignore[misc]  # papermill has no type hints
    """papermill's parameters cell for SQL kernels: comment lines the gateway reads (``session_params``),
    never SQL. Each value is JSON with every non-ASCII and control character escaped, so no value can
    end its comment line; the cells' ``{{ name }}`` are then bound to these values by the driver."""

    @classmethod
    def codify(cls, parameters: Any, comment: str = "Parameters") -> str:
        lines = [HEADER]
        for name, value in parameters.items():
            plain = value if value is None or isinstance(value, (str, bool, int, float)) else str(value)
            lines.append(f"-- {name} = {json.dumps(plain, ensure_ascii=True)}")
        return "\n".join(lines) + "\n"



papermill_translators.register("sql", SQLParameters)

"""Reading ``cellgate_config.py`` for the gateway, the agent and the admin commands: fail closed, say why.

traitlets' own ``Application.load_config_file`` logs a file that fails to run and goes on without
it (a gateway would start, or ``cellgate upgrade-db`` migrate, on the default store instead of the
configured one), and its ``catch_config_error`` turns a bad value into a log line and exit 1.
Here both are a ``TraitError`` whose message names the setting and the fix, which the command
prints before it exits:

- :func:`load_python_config`: the file, under the command line's settings (flags win over the
  file, which wins over the environment defaults); refused when any user may change it, since it
  is Python the process runs with its secrets.
- :func:`flag_config`: command-line values (text) as a traitlets ``Config`` section, each parsed
  the way its trait parses text.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from typing import Any

from traitlets import TraitError
from traitlets.config import Application, Config
from traitlets.config.loader import PyFileConfigLoader


def check_not_writable(path: str, setting: str) -> None:
    """Refuse a config file any user may change: it is Python the process runs."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & stat.S_IWOTH:
        raise TraitError(f"{setting} {path} can be changed by any user (mode {mode:o}) and cellgate "
                         f"runs it: run `chmod o-w {path}`")


def load_python_config(app: Application, path: str, cli_config: Config, setting: str) -> None:
    """Load ``path`` into ``app``'s config with ``cli_config`` over it. Raises ``TraitError`` when the
    file may be changed by anyone, fails to run, or sets a value its trait refuses."""
    check_not_writable(path, setting)
    loader = PyFileConfigLoader(os.path.basename(path), path=os.path.dirname(os.path.abspath(path)))
    try:
        found = loader.load_config()
    except Exception as exc:  # noqa: BLE001 - the file is Python: any error of its own
        raise TraitError(f"{setting} {path} failed to run: {type(exc).__name__}: {exc}: fix the file") from None
    found.merge(cli_config)
    app.update_config(found)


def flag_config(app: type[Application], section: str, flags: Mapping[str, str | Any]) -> Config:
    """``{trait name: value}`` as ``Config({section: ...})``; a text value is parsed by its trait
    (``"8080"`` for an Integer), so a bad one is a ``TraitError`` naming the flag's trait."""
    traits = app.class_traits(config=True)
    values: dict[str, Any] = {}
    for name, value in flags.items():
        if isinstance(value, str) and name in traits:
            try:
                value = traits[name].from_string(value)
            except (TraitError, ValueError):
                raise TraitError(f"{section}.{name} must be {traits[name].info()}, not {value!r}") from None
        values[name] = value
    return Config({section: values})

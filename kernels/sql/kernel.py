"""The Jupyter kernel: cells are SQL, sent raw to the target database named in the environment.

Each statement of a cell runs and commits on its own (autocommit); every result set is shown
in order; the first error stops the cell. Interrupts cancel the running statement on the
server (see :mod:`.session`). Started by the agent, the kernel runs only what the gateway
analysed, in the mode the gateway chose (:mod:`.gating`); "read-only" cells run on a second
session opened with the read-only credential.
"""

from __future__ import annotations

from typing import Any

from ipykernel.kernelbase import Kernel

from . import gating, render
from .dialects import ResultSet
from .params import Params
from .session import Interrupted, Session
from .target import READONLY_URL_ENV, ConfigError, Settings, redact

__version__ = "0.1.0"


class SQLKernel(Kernel):
    implementation = "cellgate-sql"
    implementation_version = __version__
    language = "sql"
    language_version = "SQL"
    language_info = {
        "name": "sql",
        "mimetype": "text/x-sql",
        "file_extension": ".sql",
        "pygments_lexer": "sql",
        "codemirror_mode": "sql",
    }
    banner = "cellgate SQL kernel"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._session: Session | None = None
        self._readonly_session: Session | None = None
        self._settings: Settings | None = None
        self._secrets: list[str] = []
        self._config_error: ConfigError | None = None
        try:
            settings = Settings.from_env()
        except ConfigError as exc:
            self._config_error = exc
        else:
            self._settings = settings
            self._secrets = settings.secrets()
            self._session = Session(settings)
            self.banner = f"cellgate SQL kernel ({settings.target.display()})"

    # -- execute --------------------------------------------------------------------------------

    async def do_execute(  # type: ignore[override]
        self,
        code: str,
        silent: bool,
        store_history: bool = True,
        user_expressions: dict | None = None,
        allow_stdin: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        try:
            return self._run_cell(code, silent)
        except KeyboardInterrupt:  # SIGINT outside the statement wait (interrupt_mode "signal")
            self._interrupt()
            return self._error(silent, "KeyboardInterrupt", "interrupted")

    def _run_cell(self, code: str, silent: bool) -> dict[str, Any]:
        if self._session is None or self._settings is None:
            return self._error(silent, "ConfigError", str(self._config_error))
        try:
            plan = gating.plan(code, self._settings.target.dialect, self._request_metadata(), self._settings.gated)
            if not plan.statements:
                return self._ok()
            session = self._session_for(plan.mode)
        except gating.Refused as exc:
            return self._error(silent, "CellgateRefused", str(exc))
        session.begin_cell()
        try:
            return self._run_statements(session, plan.calls(), silent)
        finally:
            session.end_cell()

    def _request_metadata(self) -> dict[str, Any]:
        metadata = (self.get_parent("shell") or {}).get("metadata")
        return metadata if isinstance(metadata, dict) else {}

    def _session_for(self, mode: str) -> Session:
        """The read-write session, or the read-only one (opened lazily); refuses without one."""
        assert self._session is not None and self._settings is not None
        if mode != gating.READ_ONLY:
            return self._session
        if self._readonly_session is None:
            readonly = self._settings.for_readonly()
            if readonly is None:
                raise gating.Refused(_no_readonly_credential(self._settings))
            self._readonly_session = Session(readonly)
        return self._readonly_session

    def _run_statements(self, session: Session, statements: list[tuple[str, Params | None]], silent: bool) -> dict[str, Any]:
        try:
            event = session.connect()
            if event and not silent:
                mode = " (read-only)" if session.settings.readonly else ""
                self._stream(f"{event.capitalize()} to {session.settings.target.display()}{mode}\n")
            last = len(statements) - 1
            for i, (statement, params) in enumerate(statements):
                result = session.execute(statement, params)
                if not silent:
                    self._publish(result, final=i == last)
                if session.interrupted:
                    raise Interrupted("interrupted")
        except Interrupted as exc:
            return self._error(silent, "KeyboardInterrupt", f"{exc}; the statement was cancelled on the server")
        except Exception as exc:
            if session.interrupted:
                detail = _message(exc)
                return self._error(silent, "KeyboardInterrupt", f"interrupted; the statement was cancelled ({detail})")
            if session.dialect.is_timeout(exc):
                timeout = session.settings.statement_timeout
                return self._error(silent, type(exc).__name__, f"{_message(exc)} (CELLGATE_STATEMENT_TIMEOUT={timeout:g} s)")
            return self._error(silent, type(exc).__name__, _message(exc))
        return self._ok()

    def _publish(self, result: Any, final: bool) -> None:
        if not isinstance(result, ResultSet):
            self._stream(f"{result.text}\n")
            return
        data, metadata = render.bundle(result)
        if final:
            content = {"execution_count": self.execution_count, "data": data, "metadata": metadata}
            self.send_response(self.iopub_socket, "execute_result", content)
        else:
            self.send_response(self.iopub_socket, "display_data", {"data": data, "metadata": metadata})

    def _stream(self, text: str, name: str = "stdout") -> None:
        self.send_response(self.iopub_socket, "stream", {"name": name, "text": redact(text, self._secrets)})

    def _ok(self) -> dict[str, Any]:
        return {"status": "ok", "execution_count": self.execution_count, "payload": [], "user_expressions": {}}

    def _error(self, silent: bool, ename: str, evalue: str) -> dict[str, Any]:
        evalue = redact(evalue, self._secrets)
        content = {"ename": ename, "evalue": evalue, "traceback": [f"{ename}: {evalue}"]}
        if not silent:
            self.send_response(self.iopub_socket, "error", content)
        return {"status": "error", "execution_count": self.execution_count, **content}

    # -- interrupt, shutdown ----------------------------------------------------------------------

    async def interrupt_request(self, stream: Any, ident: Any, parent: Any) -> None:  # type: ignore[override]
        """``interrupt_mode: message``: cancel on the server from the control thread, no signal."""
        self._interrupt()
        assert self.session is not None  # a running kernel has its session
        self.session.send(stream, "interrupt_reply", {"status": "ok"}, parent, ident=ident)

    def _interrupt(self) -> None:
        for session in (self._session, self._readonly_session):
            if session is not None:
                session.interrupt()

    async def do_shutdown(self, restart: bool) -> dict[str, Any]:  # type: ignore[override]
        for session in (self._session, self._readonly_session):
            if session is not None:
                session.close()
        return {"status": "ok", "restart": restart}

    # -- editor support ---------------------------------------------------------------------------

    async def do_is_complete(self, code: str) -> dict[str, Any]:  # type: ignore[override]
        """Complete when the last statement ends with ``;`` (or the cell is empty)."""
        stripped = code.strip()
        if not stripped or stripped.endswith(";"):
            return {"status": "complete"}
        return {"status": "incomplete", "indent": ""}

    async def do_complete(self, code: str, cursor_pos: int) -> dict[str, Any]:  # type: ignore[override]
        return {"status": "ok", "matches": [], "cursor_start": cursor_pos, "cursor_end": cursor_pos, "metadata": {}}


def _no_readonly_credential(settings: Settings) -> str:
    if settings.target.dialect == "sqlite":
        return ("this cell was auto-approved to run read-only, but an in-memory SQLite database cannot be "
                "opened read-only; nothing ran (use a database file, or set auto_approve = \"never\" in the "
                "target's policy so that every cell is reviewed)")
    return ("this cell was auto-approved to run read-only, but this target has no read-only credential "
            f"({READONLY_URL_ENV} is not set); nothing ran. Fix: set readonly_url_env (or readonly_url_file, "
            "readonly_url) for the target in the agent config, or set auto_approve = \"never\" in the "
            "target's policy so that every cell is reviewed")


def _message(exc: BaseException) -> str:
    """The database's message: PyMySQL errors are ``(code, message)`` tuples."""
    args: tuple[Any, ...] = getattr(exc, "args", ())
    if len(args) == 2 and isinstance(args[0], int):
        return f"({args[0]}) {args[1]}"
    return str(exc).strip() or type(exc).__name__

"""``cellgate demo``: the whole system on one machine, in one command.

It prepares (idempotently) a state folder, by default ``.cellgate-demo``::

    gateway.db        the gateway's store (SQLite): users dev, reviewer, admin; group dba;
                      target payments (policy: cellgate/demo_policy.toml)
    target/payments.db  the demo target: a SQLite payments database (accounts, cards, transactions)
    agent.toml        the agent's config: target payments → target/payments.db
    agent-state/      the agent's task journal (its ``state_dir``)
    templates/        a git repository of example templates (cellgate/demo_templates.py)
    gateway_config.py the gateway's settings: c.Templates.* pointing at templates/
    notebooks/        JupyterLab's root, with payments.ipynb
    logs/             gateway.log, agent.log, jupyterlab.log

then runs three children, each in its own session (so a Ctrl-C reaches only this process, which
stops them in order): the gateway, the agent (once the gateway answers) and JupyterLab with the
cellgate extension, as user ``dev`` (once the target is online). When everything answers it
prints the URLs and tokens and writes ``demo.json`` in the current folder (mode 0600).

Ctrl-C or SIGTERM: JupyterLab, then the agent, then the gateway get SIGTERM; whatever is still
alive after a grace period (their kernels included) gets SIGKILL; exit 0. When a child dies on its
own, the others are stopped and the exit status is 1, with the path of the child's log.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import webbrowser
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import demo_data, demo_templates

TARGET = "payments"
GATEWAY_TIMEOUT = 30.0
AGENT_TIMEOUT = 30.0
LAB_TIMEOUT = 60.0
#: seconds each child gets to stop after SIGTERM, in stop order
GRACE = {"jupyterlab": 8.0, "agent": 4.0, "gateway": 3.0}
DEMO_JSON = "demo.json"
#: run as root, the agent runs each kernel as its own uid of this range (docs/agent.md), with
#: this group on target/ and target/payments.db so that the kernels can write the database
KERNEL_UIDS = "61000-61999"
KERNEL_GID = 62000


class DemoError(Exception):
    """The demo cannot start; the message says what failed and where its log is."""


class Stop(BaseException):
    """SIGTERM or SIGINT: stop the demo cleanly."""


@dataclass(frozen=True)
class Options:
    state_dir: Path
    port: int = 8765
    lab_port: int | None = None
    open_browser: bool = True
    cwd: Path = field(default_factory=Path.cwd)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def jupyter_port(self) -> int:
        return self.lab_port if self.lab_port is not None else self.port + 1

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.state_dir / 'gateway.db'}"


@dataclass(frozen=True)
class Tokens:
    dev: str
    reviewer: str
    admin: str
    agent: str = field(repr=False)

    def __repr__(self) -> str:
        return "Tokens(<hidden>)"


#: applied on every start, with the same code as `cellgate apply -f`
DEMO_POLICY = Path(__file__).with_name("demo_policy.toml")


# ------------------------------------------------------------------- the state
def prepare_store(db_url: str) -> Tokens:
    """Users, group, target and fresh tokens, written through the store (re-runnable)."""
    import tomllib

    from .gateway import apply, auth
    from .gateway.store import Store

    def _tx(session: Any) -> Tokens:
        actor = "cli:demo"
        admin = auth.ensure_user(session, "admin", is_admin=True, actor=actor)
        admin.is_admin = True
        dev = auth.ensure_user(session, "dev", actor=actor)
        reviewer = auth.ensure_user(session, "reviewer", actor=actor)
        apply.apply(session, tomllib.loads(DEMO_POLICY.read_text()), actor)
        raw = {user.name: auth.new_token(session, "user", user=user, name="demo", actor=actor)[0]
               for user in (dev, reviewer, admin)}
        agent, _ = auth.new_token(session, "agent", name="demo-agent", agent_targets=[TARGET], actor=actor)
        return Tokens(dev=raw["dev"], reviewer=raw["reviewer"], admin=raw["admin"], agent=agent)

    store = Store(db_url)
    try:
        return store.call(_tx)
    finally:
        store.close()


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, even when the file already exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def write_agent_config(path: Path, db_path: Path, isolated: bool) -> None:
    """The demo agent's targets file; its journal (``state_dir``) is kept in the demo's state
    directory beside it, so two demos (or a demo and a real agent) never share one."""
    url = f"sqlite:///{db_path.resolve()}"
    if isolated:
        agent = f'kernel_isolation = "uid"\nkernel_uids = "{KERNEL_UIDS}"\n'
        target = f"kernel_gid = {KERNEL_GID}\n"
    else:  # not root: the agent cannot start kernels as other uids
        agent = 'kernel_isolation = "off"  # development only: kernels run as you\n'
        target = ""
    write_private(path, f"""# written by `cellgate demo`; rewritten on each run
[agent]
id = "demo-agent"
tags = ["demo"]
state_dir = {json.dumps(str((path.parent / "agent-state").resolve()))}
{agent}
[targets.{TARGET}]
kind = "sql"
display_name = "Payments (demo)"
url = {json.dumps(url)}
row_limit = 1000
{target}""")


def target_db(state: Path) -> Path:
    return state / "target" / "payments.db"


def can_isolate(state: Path) -> bool:
    """Root, and the state folder reachable by other users (the kernels' uids)."""
    if os.geteuid() != 0:
        return False
    return all(os.stat(parent).st_mode & 0o001 for parent in state.resolve().parents)


def share_with_kernels(db: Path, gid: int) -> None:
    """target/ (setgid, group-writable: SQLite writes its journal there) and its files."""
    os.chown(db.parent, 0, gid)
    os.chmod(db.parent, 0o2770)
    for path in db.parent.iterdir():
        os.chown(path, 0, gid, follow_symlinks=False)
        os.chmod(path, 0o660, follow_symlinks=False)


def prepare(opts: Options) -> Tokens:
    state = opts.state_dir
    for sub in ("logs", "notebooks"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    db = target_db(state)
    if (state / "payments.db").exists() and not db.exists():  # the layout before target/
        db.parent.mkdir(exist_ok=True)
        (state / "payments.db").rename(db)
    demo_data.create_payments_db(db)
    demo_data.write_sample_notebook(state / "notebooks" / "payments.ipynb")
    isolated = can_isolate(state)
    if isolated:
        share_with_kernels(db, KERNEL_GID)
        os.chmod(state, 0o711)  # kernels reach target/, and list nothing
        os.chmod(state / "logs", 0o700)
    elif os.geteuid() == 0:
        print(f"cellgate demo: {state} is not reachable by other users, so the agent runs "
              "kernels WITHOUT isolation (as root); use --dir under a folder others can "
              "traverse to run them as unprivileged uids", file=sys.stderr, flush=True)
    write_agent_config(state / "agent.toml", db, isolated)
    config = ""
    if demo_templates.write_repository(state / "templates"):
        config = (f"c.Templates.repository = {str(state / 'templates')!r}\n"
                  f"c.Templates.cache_dir = {str(state / 'templates-cache')!r}\n")
    else:
        print("cellgate demo: git is not installed, so the demo runs without templates", file=sys.stderr, flush=True)
    (state / "gateway_config.py").write_text(config)
    os.chmod(state / "gateway_config.py", 0o644)
    tokens = prepare_store(opts.db_url)
    gateway_db = state / "gateway.db"
    if gateway_db.exists():
        gateway_db.chmod(0o600)  # the gateway's store: users, token hashes, audit
    return tokens


# ---------------------------------------------------------------- the children
def _cellgate() -> list[str]:
    """The ``cellgate`` command of this installation."""
    beside = Path(sys.executable).with_name("cellgate")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("cellgate")
    if found:
        return [found]
    return [sys.executable, "-c", "from cellgate.cli.main import main; main()"]


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path


class Children:
    """The demo's child processes, started in their own sessions, stopped in reverse order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Child] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:  # the child keeps its own descriptor
            log.write(f"\n--- cellgate demo: starting {name} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            log.flush()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, **(env or {})}, start_new_session=True)
        child = Child(name, proc, log_path)
        self.started.append(child)
        return child

    def check(self) -> None:
        """Raise ``DemoError`` when a child has exited."""
        for child in self.started:
            code = child.proc.poll()
            if code is not None:
                raise DemoError(f"{child.name} exited unexpectedly (status {code}); see its log: {child.log_path}")

    def stop(self) -> None:
        """SIGTERM each child (last started first) with a grace period, then SIGKILL what is left."""
        leftovers = self._descendants()
        for child in reversed(self.started):
            if child.proc.poll() is None:
                _signal(child.proc.pid, signal.SIGTERM)
                try:
                    child.proc.wait(GRACE.get(child.name, 3.0))
                except subprocess.TimeoutExpired:
                    _signal_group(child.proc.pid, signal.SIGKILL)
                    child.proc.wait()
            _signal_group(child.proc.pid, signal.SIGKILL)  # helpers left in its session
        _kill_all(leftovers)  # kernels run in sessions of their own

    def _descendants(self) -> list[Any]:
        try:
            import psutil
        except ImportError:  # pragma: no cover - psutil comes with ipykernel
            return []
        found = []
        for child in self.started:
            try:
                found.extend(psutil.Process(child.proc.pid).children(recursive=True))
            except psutil.Error:
                pass
        return found


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_all(processes: list[Any]) -> None:
    if not processes:
        return
    import psutil

    alive = [p for p in processes if p.is_running()]
    if not alive:
        return
    for p in alive:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, still = psutil.wait_procs(alive, timeout=2)
    for p in still:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(still, timeout=2)


# ------------------------------------------------------------------- waiting
def http_json(url: str, token: str | None = None, timeout: float = 3.0) -> Any:
    """GET ``url`` and decode its JSON; ``OSError`` (``URLError`` included) when it fails."""
    headers = {"Authorization": f"token {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def wait_for(what: str, probe: Callable[[], bool], timeout: float, children: Children, hint: str) -> None:
    """Poll ``probe`` until it is true; fail after ``timeout`` or as soon as a child dies."""
    deadline = time.monotonic() + timeout
    while True:
        children.check()
        try:
            if probe():
                return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise DemoError(f"{what} did not happen within {timeout:.0f} s; {hint}")
        time.sleep(0.25)


def target_online(gateway_url: str, token: str) -> bool:
    targets = http_json(f"{gateway_url}/api/v1/targets", token)["targets"]
    return any(t["name"] == TARGET and t["online"] for t in targets)


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# -------------------------------------------------------------------- running
@contextmanager
def signals_stop() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into ``Stop`` while the block runs; ignore them while cleaning up."""
    def _raise(signum: int, _frame: Any) -> None:
        raise Stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)


def start_all(opts: Options, tokens: Tokens, children: Children, lab_token: str) -> None:
    state, logs = opts.state_dir, opts.state_dir / "logs"
    children.start("gateway", [*_cellgate(), "gateway", "--port", str(opts.port), "--db-url", opts.db_url,
                               "--public-url", opts.gateway_url, "--config", str(state / "gateway_config.py")])
    wait_for("the gateway answering", lambda: bool(http_json(f"{opts.gateway_url}/api/v1/")), GATEWAY_TIMEOUT,
             children, f"see {logs / 'gateway.log'}")

    # the agent token goes in the environment: arguments are visible to every user of the host
    children.start("agent", [*_cellgate(), "agent", "--gateway", opts.gateway_url, "--config", str(state / "agent.toml")],
                   env={"CELLGATE_AGENT_TOKEN": tokens.agent})
    wait_for(f"target {TARGET} online", lambda: target_online(opts.gateway_url, tokens.admin), AGENT_TIMEOUT,
             children, f"the agent did not connect; see {logs / 'agent.log'}")

    lab_url = f"http://127.0.0.1:{opts.jupyter_port}"
    children.start("jupyterlab", [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
        f"--port={opts.jupyter_port}", "--port-retries=0",
        f"--IdentityProvider.token={lab_token}",
        f"--ServerApp.root_dir={state / 'notebooks'}",
        '--ServerApp.jpserver_extensions={"cellgate.notebook_ext": True}',
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ], env={"CELLGATE_URL": opts.gateway_url, "CELLGATE_TOKEN": tokens.dev})
    wait_for("JupyterLab answering", lambda: bool(http_json(f"{lab_url}/api/status", lab_token)), LAB_TIMEOUT,
             children, f"see {logs / 'jupyterlab.log'}")


def write_demo_json(opts: Options, tokens: Tokens, lab_token: str) -> Path:
    path = opts.cwd / DEMO_JSON
    write_private(path, json.dumps({
        "gateway_url": opts.gateway_url,
        "jupyter_url": f"http://127.0.0.1:{opts.jupyter_port}/lab?token={lab_token}",
        "jupyter_token": lab_token,
        "tokens": {"dev": tokens.dev, "reviewer": tokens.reviewer, "admin": tokens.admin},
        "state_dir": str(opts.state_dir),
    }, indent=2) + "\n")
    return path


def banner(opts: Options, tokens: Tokens, lab_token: str, demo_json: Path) -> str:
    lab = f"http://127.0.0.1:{opts.jupyter_port}/lab/tree/payments.ipynb?token={lab_token}"
    as_reviewer = f"CELLGATE_URL={opts.gateway_url} CELLGATE_TOKEN={tokens.reviewer}"
    as_dev = f"CELLGATE_URL={opts.gateway_url} CELLGATE_TOKEN={tokens.dev}"
    return f"""
cellgate demo is running.

  JupyterLab (as dev):  {lab}
  gateway:              {opts.gateway_url}
  state and logs:       {opts.state_dir}  (logs/gateway.log, logs/agent.log, logs/jupyterlab.log)
  URLs and tokens:      {demo_json}

Open payments.ipynb and run its cells: reads run at once, writes wait for a review by dba,
DROP and TRUNCATE are denied.
Review from another terminal, as reviewer:

  {as_reviewer} cellgate reviews
  {as_reviewer} cellgate review approve TASK_ID
  {as_reviewer} cellgate review reject TASK_ID --comment "why not"

Or run a script as dev:

  {as_dev} cellgate run --target {TARGET} --why "demo" -e "SELECT count(*) FROM accounts"

Admin token (users, groups, audit): {tokens.admin}
Press Ctrl-C to stop everything.
"""


def open_browser(url: str) -> None:
    """Open ``url`` in a graphical browser, if there is one; never a console browser in this terminal."""
    graphical = sys.platform in ("darwin", "win32") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if not graphical:
        return
    try:
        webbrowser.open(url)
    except Exception:  # no browser is fine: the URL is printed
        pass


def run(opts: Options) -> int:
    """Prepare, start, wait for Ctrl-C/SIGTERM or a child's death; 0 after a requested stop."""
    for port, what in ((opts.port, "--port"), (opts.jupyter_port, "--lab-port")):
        if not port_free(port):
            print(f"cellgate demo: port {port} is in use (is a demo already running?); choose another with {what}",
                  file=sys.stderr)
            return 1
    children = Children(opts.state_dir / "logs")
    try:
        with signals_stop():
            try:
                tokens = prepare(opts)
            except Exception as exc:  # StoreError with its fix, a broken state folder…
                raise DemoError(f"cannot prepare {opts.state_dir}: {exc}") from exc
            lab_token = secrets.token_urlsafe(24)
            start_all(opts, tokens, children, lab_token)
            demo_json = write_demo_json(opts, tokens, lab_token)
            print(banner(opts, tokens, lab_token, demo_json), flush=True)
            if opts.open_browser:
                open_browser(f"http://127.0.0.1:{opts.jupyter_port}/lab/tree/payments.ipynb?token={lab_token}")
            while True:
                children.check()
                time.sleep(0.5)
    except Stop as stop:
        print(f"\ncellgate demo: {stop} received, stopping…", file=sys.stderr, flush=True)
        children.stop()
        print("cellgate demo: stopped.", file=sys.stderr)
        return 0
    except DemoError as exc:
        print(f"cellgate demo: {exc}", file=sys.stderr, flush=True)
        children.stop()
        return 1
    except BaseException:
        children.stop()
        raise

"""Kernel isolation, with real processes: a cell cannot find the agent's or another kernel's
secrets, each kernel has its own uid, and nothing a kernel started outlives it."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import stat
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from agent_harness import CELLGATE, KERNEL_UIDS, TOKEN, running

from cellgate.agent import isolation
from cellgate.agent.isolation import IsolationError
from cellgate.agent.kernels import KernelHost

# per run, so that no file on the host holds them (a copy of this file, say)
PAY_SECRET = f"pay-{secrets.token_hex(6)}"
OTHER_SECRET = f"other-{secrets.token_hex(6)}"
B_CELL_SECRET = f"typed-in-b-{secrets.token_hex(6)}"  # a literal only kernel B's cell contains
FIRST, LAST = (int(v) for v in KERNEL_UIDS.split("-"))
#: variables ipykernel sets in its own environment at start
IPYKERNEL_SETS = {"TERM", "CLICOLOR", "CLICOLOR_FORCE", "FORCE_COLOR", "PAGER", "GIT_PAGER",
                  "MPLBACKEND", "PYDEVD_DISABLE_FILE_VALIDATION", "PYDEVD_USE_FRAME_EVAL",
                  "COLUMNS", "LINES"}

# what a cell looks for, and where; the needles arrive hex-encoded so that the cell's own text
# (in its history, its memory) does not hold them
SEARCH = r'''
import json, os
needles = [bytes.fromhex(h) for h in {needles!r}]
found, readable = [], []
def look(where, data):
    if isinstance(data, str):
        data = data.encode()
    for n in needles:
        if n in data:
            found.append((where, n.decode()))
def read(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return
    readable.append(path)
    look(path, data)
for pid in os.listdir("/proc"):
    if pid.isdigit():
        for name in ("environ", "cmdline", "status", "mem"):
            read(f"/proc/{{pid}}/{{name}}")
look("os.environ", repr(dict(os.environ)))
read({config!r})
home = os.environ["HOME"]
runtime = os.path.dirname(os.path.dirname(home))
for root in (home, runtime, os.path.join(runtime, {other_kid!r}), "/tmp"):
    for dirpath, dirs, files in os.walk(root):
        for f in files:
            read(os.path.join(dirpath, f))
ip = get_ipython().history_manager
look("history", repr(list(ip.get_tail(1000, raw=True, include_latest=True))))
look("history search", repr(list(ip.search("*"))))
print(json.dumps({{"found": found, "uid": os.getuid(), "gid": os.getgid(),
                  "groups": os.getgroups(), "hist_file": str(ip.hist_file),
                  "agent_environ": f"/proc/{agent_pid}/environ" in readable,
                  "agent_mem": f"/proc/{agent_pid}/mem" in readable,
                  "other_environ": f"/proc/{other_pid}/environ" in readable,
                  "umask": os.umask(0o077), "home": home, "cwd": os.getcwd()}}))
'''


def write_config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "agent.toml"
    config.write_text(f"""
[agent]
id = "agent-iso"
kernel_uids = "{KERNEL_UIDS}"
{extra}
[targets.payments]
kind = "python"
url_env = "CG_ISO_PAY_URL"

[targets.other]
kind = "python"
url = "postgresql://app:{OTHER_SECRET}@db.internal/other"
""")
    config.chmod(0o600)
    return config


def uid_processes(uid: int) -> list[int]:
    return isolation.live_processes([uid]).get(uid, [])


def alive(pid: int) -> bool:
    """Running (a zombie is dead: our PID 1 may be slow to reap what it inherits)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status and "State:\tX" not in status


async def started(gw, target: str) -> tuple[str, int, int]:
    kid = str(uuid.uuid4())
    reply = await gw.request("kernel_start", kernel_id=kid, target=target)
    assert reply["ok"], reply
    out, _ = await gw.run(kid, "import os\nprint(os.getuid(), os.getpid())")
    uid, pid = (int(v) for v in out.split())
    return kid, uid, pid


def test_a_cell_finds_no_secret_of_the_agent_or_another_kernel(tmp_path):
    env = {"CG_ISO_PAY_URL": f"postgresql://app:{PAY_SECRET}@db.internal/pay",
           "CG_ISO_CANARY": "agent-only"}

    async def scenario():
        async with running(write_config(tmp_path), env=env) as (gw, agent):  # token on argv
            await asyncio.wait_for(gw.hellos.get(), 15)
            assert agent.proc is not None
            agent_pid = agent.proc.pid
            kid_a, uid_a, _pid_a = await started(gw, "payments")
            kid_b, uid_b, pid_b = await started(gw, "other")
            assert FIRST <= uid_a <= LAST and FIRST <= uid_b <= LAST and uid_a != uid_b

            # kernel B types a secret and holds its own target's URL; its HMAC key is a secret too
            await gw.run(kid_b, f"x = {B_CELL_SECRET!r}\nimport os\nu = os.environ['DATABASE_URL']")
            runtime = Path(json.loads((await gw.run(kid_a, "import os, json\n"
                                                        "print(json.dumps(os.environ['HOME']))"))[0])).parents[1]
            key_b = json.loads((runtime / kid_b / "connection.json").read_text())["key"]
            needles = [TOKEN, OTHER_SECRET, B_CELL_SECRET, key_b]
            code = SEARCH.format(needles=[n.encode().hex() for n in needles], config=str(agent.config),
                                 other_kid=kid_b, agent_pid=agent_pid, other_pid=pid_b)
            out, reply = await gw.run(kid_a, code)
            assert reply["status"] == "ok", reply
            result = json.loads(out.strip().splitlines()[-1])
            assert result["found"] == []
            assert result["uid"] == uid_a and result["gid"] == uid_a and result["groups"] == []
            assert not result["agent_environ"] and not result["agent_mem"]
            assert not result["other_environ"]
            assert result["hist_file"] == ":memory:" and result["umask"] == 0o077
            assert result["cwd"] == result["home"] == str(runtime / kid_a / "home")

            # the kernel's environment is built from scratch: the agent's own variables stay out
            out, _ = await gw.run(kid_a, "import os\nprint(sorted(os.environ))")
            names = set(eval(out))  # noqa: S307 - our own kernel's output
            allowed = {"PATH", "LANG", "LANGUAGE", "TZ", "HOME", "IPYTHONDIR", "TMPDIR",
                       "JUPYTER_RUNTIME_DIR", "PYTHONNOUSERSITE", "PYTHONDONTWRITEBYTECODE",
                       "CELLGATE_TARGET_NAME", "CELLGATE_TARGET_URL", "DATABASE_URL",
                       "JPY_PARENT_PID", "JPY_SESSION_NAME", *IPYKERNEL_SETS}
            assert {n for n in names if not n.startswith("LC_")} <= allowed, names
            assert "CG_ISO_CANARY" not in names and "CG_ISO_PAY_URL" not in names

            # the agent scrubbed the token from its own argv memory, and the URL from environ
            assert TOKEN.encode() not in Path(f"/proc/{agent_pid}/cmdline").read_bytes()
            assert PAY_SECRET.encode() not in Path(f"/proc/{agent_pid}/environ").read_bytes()
            assert await agent.stop() == 0
        assert not runtime.exists()  # the agent made it, the agent removed it
        for text in [*gw.raw, agent.log]:
            assert PAY_SECRET not in text and OTHER_SECRET not in text and TOKEN not in text

    asyncio.run(scenario())


def test_nothing_a_kernel_started_outlives_it(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)

    async def scenario():
        env = {"CG_ISO_PAY_URL": "postgresql://app@db.internal/pay"}
        async with running(write_config(tmp_path), env=env, token_arg=None,
                           token_file=token_file) as (gw, agent):
            await asyncio.wait_for(gw.hellos.get(), 15)
            kid, uid, _ = await started(gw, "payments")
            out, _ = await gw.run(kid, (
                "import subprocess, os\n"
                "p = subprocess.Popen(['sleep', '1000'], start_new_session=True)\n"
                "q = subprocess.Popen(['sh', '-c', 'sleep 1000 & sleep 1000'], start_new_session=True)\n"
                "open(os.path.join('/tmp', 'left-by-kernel-%d' % os.getuid()), 'w').write('x')\n"
                "print(p.pid)\n"))
            sleeper = int(out)
            assert len(uid_processes(uid)) >= 3
            assert (await gw.request("kernel_stop", kernel_id=kid))["ok"]
            assert uid_processes(uid) == []
            assert not alive(sleeper)
            assert not Path(f"/tmp/left-by-kernel-{uid}").exists()

            # a kernel that dies by itself: what it left behind is killed too
            kid, uid, _ = await started(gw, "payments")
            gw.send_execute(kid, "import subprocess, os\n"
                                 "subprocess.Popen(['sleep', '1000'], start_new_session=True)\n"
                                 "os._exit(3)")
            status = await asyncio.wait_for(gw.statuses.get(), 15)
            assert status["state"] == "dead"
            for _ in range(50):
                if not uid_processes(uid):
                    break
                await asyncio.sleep(0.1)
            assert uid_processes(uid) == []
            assert await agent.stop() == 0
        assert "as uid" in agent.log

    asyncio.run(scenario())


CONNECTION = r"""
import json, os
from ipykernel import get_connection_file
info = json.load(open(get_connection_file()))
print(json.dumps({"transport": info["transport"], "ip": info["ip"], "home": os.environ["HOME"],
                  "ports": [info[k] for k in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")]}))
"""


def test_a_kernels_channels_are_unix_sockets_in_its_home(tmp_path):
    """Not TCP: a TCP port picked by binding port 0 can be taken by another process before the
    kernel binds it (the kernel then dies at start), and is reachable by every local user."""
    async def scenario():
        async with running(write_config(tmp_path), env={"CG_ISO_PAY_URL": "postgresql://app@db.internal/pay"}) as (gw, agent):
            await asyncio.wait_for(gw.hellos.get(), 15)
            kid, uid, _ = await started(gw, "payments")
            out, _ = await gw.run(kid, CONNECTION)
            found = json.loads(out)
            assert found["transport"] == "ipc" and found["ip"] == os.path.join(found["home"], "k"), found
            home = Path(found["home"])
            assert home.stat().st_uid == uid and oct(home.stat().st_mode & 0o777) == "0o700"
            sockets = [home / f"k-{port}" for port in found["ports"]]
            assert len(set(sockets)) == 5 and all(stat.S_ISSOCK(p.stat().st_mode) for p in sockets)
            assert (await gw.request("kernel_stop", kernel_id=kid))["ok"]
            assert not home.exists()
            assert await agent.stop() == 0

    asyncio.run(scenario())


def test_isolation_off_warns_at_start_and_on_every_kernel(tmp_path):
    async def scenario():
        config = write_config(tmp_path, 'kernel_isolation = "off"')
        env = {"CG_ISO_PAY_URL": f"postgresql://app:{PAY_SECRET}@db.internal/pay"}
        async with running(config, env=env) as (gw, agent):
            await asyncio.wait_for(gw.hellos.get(), 15)
            kid = str(uuid.uuid4())
            assert (await gw.request("kernel_start", kernel_id=kid, target="payments"))["ok"]
            out, _ = await gw.run(kid, "import os\nprint(os.getuid(), 'CG_ISO_PAY_URL' in os.environ)")
            assert out.split() == [str(os.getuid()), "False"]
            assert await agent.stop() == 0
        assert "KERNEL ISOLATION IS OFF" in agent.log and "WITHOUT ISOLATION" in agent.log

    asyncio.run(scenario())


def test_uid_isolation_needs_privileges(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(isolation, "_effective_caps", lambda: 0)
    with pytest.raises(IsolationError, match=r"lacks CAP_CHOWN.*run the agent as root.*"
                                             r"kernel_isolation = \"off\""):
        KernelHost({}, lambda frame: None)


def test_cli_as_non_root_refuses_uid_isolation(tmp_path):
    where = Path(tempfile.mkdtemp(prefix="cellgate-iso-"))
    try:
        where.chmod(0o755)
        config = where / "agent.toml"
        config.write_text('[targets.x]\nkind = "python"\n')
        config.chmod(0o644)
        proc = subprocess.run([CELLGATE, "agent", "--gateway", "http://127.0.0.1:9", "--token",
                               "t-123456789", "--config", str(config)], capture_output=True,
                              text=True, timeout=60, user=62999, group=62999, extra_groups=[],
                              cwd=where, env={"PATH": os.environ["PATH"], "HOME": str(where)})
    finally:
        for f in where.iterdir():
            f.unlink()
        where.rmdir()
    assert proc.returncode == 2, proc.stderr
    assert "kernel_isolation = \"uid\"" in proc.stderr and "run the agent as root" in proc.stderr


def test_uid_pool_skips_uids_with_processes_and_claimed_ones(tmp_path):
    low, high = 63000, 63002  # outside KERNEL_UIDS: no test agent uses these
    sleeper = subprocess.Popen(["sleep", "30"], user=high, group=high, extra_groups=[])
    try:
        first = isolation.UidPool(low, high, lock_dir=str(tmp_path))
        second = isolation.UidPool(low, high, lock_dir=str(tmp_path))
        got = {first.allocate(), second.allocate()}
        assert got == {low, low + 1}  # high has a process; each pool claimed one of the others
        with pytest.raises(IsolationError, match="every kernel uid"):
            second.allocate()
        first.release(low)
        assert second.allocate() == low
    finally:
        sleeper.kill()
        sleeper.wait()
    assert isolation.kill_uid(high, 5.0) and uid_processes(high) == []


def test_token_file_readable_by_others_is_refused(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("x" * 20)
    token_file.chmod(0o640)
    config = write_config(tmp_path)
    proc = subprocess.run([CELLGATE, "agent", "--gateway", "http://127.0.0.1:9", "--token-file",
                           str(token_file), "--config", str(config)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "readable by group or others" in proc.stderr and "chmod 600" in proc.stderr

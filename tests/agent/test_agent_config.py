"""The agent's config file: valid files load, invalid ones name the file and the field."""

from __future__ import annotations

import os
import subprocess

import pytest
from agent_harness import CELLGATE

from cellgate.agent.config import ConfigError, load_config


def write(tmp_path, text):
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_loads_targets_and_resolves_urls(tmp_path):
    url_file = tmp_path / "orders.url"
    url_file.write_text("mariadb+pymysql://u:filepw@db/orders\n")
    url_file.chmod(0o600)
    path = write(tmp_path, f"""
[agent]
id = "a1"
tags = ["prod", "eu"]
[targets.payments]
kind = "sql"
url_env = "PAY_URL"
row_limit = 5
statement_timeout = 7
[targets.orders]
kind = "sql"
url_file = "{url_file}"
[targets.demo]
kind = "sql"
url = "sqlite:///demo.db"
[targets.notebook]
kind = "python"
""")
    config = load_config(path, environ={"PAY_URL": "postgresql+psycopg://u:envpw@db/pay"})
    assert config.agent_id == "a1" and config.tags == ["prod", "eu"]
    t = config.targets
    assert [t[n].dialect for n in ("payments", "orders", "demo", "notebook")] == \
        ["postgresql", "mariadb", "sqlite", None]
    assert t["payments"].url == "postgresql+psycopg://u:envpw@db/pay"
    assert t["orders"].url == "mariadb+pymysql://u:filepw@db/orders"
    assert (t["payments"].row_limit, t["payments"].statement_timeout) == (5, 7)
    assert t["payments"].kernel_name == "cellgate-sql" and t["notebook"].kernel_name == "python3"
    assert "envpw" not in repr(t["payments"]) and "filepw" not in repr(config)
    assert config.warnings == []


def test_inline_password_warns_without_the_password(tmp_path):
    path = write(tmp_path, '[targets.x]\nkind = "sql"\nurl = "postgresql://u:hunter2@db/x"\n')
    path.chmod(0o600)
    config = load_config(path, environ={})
    assert config.warnings and "targets.x.url" in config.warnings[0]
    assert "hunter2" not in " ".join(config.warnings)


def test_inline_password_in_a_readable_file_is_refused(tmp_path):
    path = write(tmp_path, '[targets.x]\nkind = "sql"\nurl = "postgresql://u:hunter2@db/x"\n')
    path.chmod(0o640)
    with pytest.raises(ConfigError, match=r"targets.x.url: .*readable by group or others "
                                          r"\(mode 640\): run `chmod 600") as info:
        load_config(path, environ={})
    assert "hunter2" not in str(info.value)
    path.write_text('[targets.x]\nkind = "sql"\nurl = "sqlite:///x.db"\n')  # no password: fine
    assert load_config(path, environ={}).targets["x"].url == "sqlite:///x.db"


def test_isolation_settings(tmp_path):
    path = write(tmp_path, '[targets.x]\nkind = "python"\n')
    config = load_config(path, environ={})
    assert (config.kernel_isolation, config.kernel_uids, config.runtime_dir) == \
        ("uid", (61000, 61999), None)
    assert config.targets["x"].kernel_gid is None
    path = write(tmp_path, '[agent]\nkernel_isolation = "off"\nkernel_uids = "70000 - 70009"\n'
                           'runtime_dir = "/run/cg"\n[targets.x]\nkind = "python"\nkernel_gid = 62000\n')
    config = load_config(path, environ={})
    assert (config.kernel_isolation, config.kernel_uids, config.runtime_dir) == \
        ("off", (70000, 70009), "/run/cg")
    assert config.targets["x"].kernel_gid == 62000


@pytest.mark.parametrize("text, field", [
    ('[targets.x]\nkind = "mongo"\nurl = "sqlite://"\n', "targets.x.kind"),
    ('[targets.x]\nkind = "sql"\n', "targets.x.url_env"),
    ('[targets.x]\nkind = "sql"\nurl_env = "NOPE_NOT_SET"\n', "targets.x.url_env"),
    ('[targets.x]\nkind = "sql"\nurl = "sqlite://"\nurl_env = "A"\n', "targets.x.url"),
    ('[targets.x]\nkind = "sql"\nurl = "mongodb://h/x"\n', "targets.x.url"),
    ('[targets.x]\nkind = "sql"\nurl = "sqlite://"\nrow_limit = 0\n', "targets.x.row_limit"),
    ('[targets.x]\nkind = "sql"\nurl = "sqlite://"\nurll = "x"\n', "targets.x.urll"),
    ('[agent]\ntags = "prod"\n[targets.x]\nkind = "python"\n', "agent.tags"),
    ('[agent]\nid = "a"\n', "targets"),
    ('[agent]\nkernel_isolation = "none"\n[targets.x]\nkind = "python"\n', "agent.kernel_isolation"),
    ('[agent]\nkernel_uids = "0-10"\n[targets.x]\nkind = "python"\n', "agent.kernel_uids"),
    ('[agent]\nkernel_uids = "62000-61000"\n[targets.x]\nkind = "python"\n', "agent.kernel_uids"),
    ('[agent]\nkernel_uids = 61000\n[targets.x]\nkind = "python"\n', "agent.kernel_uids"),
    ('[agent]\nruntime_dir = "run"\n[targets.x]\nkind = "python"\n', "agent.runtime_dir"),
    ('[targets.x]\nkind = "python"\nkernel_gid = 10\n', "targets.x.kernel_gid"),
    ('[targets.x]\nkind = "python"\nkernel_gid = 61005\n', "targets.x.kernel_gid"),
])
def test_invalid_files_name_the_field(tmp_path, text, field):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.field == field
    assert str(info.value).startswith(f"{path}: {field}: ")


def test_readable_url_file_is_refused(tmp_path):
    url_file = tmp_path / "x.url"
    url_file.write_text("sqlite:///x.db")
    url_file.chmod(0o644)
    path = write(tmp_path, f'[targets.x]\nkind = "sql"\nurl_file = "{url_file}"\n')
    with pytest.raises(ConfigError, match=r"targets.x.url_file: .*readable by group or others"):
        load_config(path, environ={})


@pytest.mark.parametrize("text, field", [
    ('[targets.x]\nkind = "shell"\nurl = "sqlite://"\n', "targets.x.kind"),
    ('[targets.x]\nkind = "sql"\n', "targets.x.url_env"),
    ("WORLD_READABLE", "targets.x.url_file"),
])
def test_cli_exits_non_zero_naming_the_field(tmp_path, text, field):
    if text == "WORLD_READABLE":
        url_file = tmp_path / "x.url"
        url_file.write_text("sqlite:///x.db")
        os.chmod(url_file, 0o604)
        text = f'[targets.x]\nkind = "sql"\nurl_file = "{url_file}"\n'
    path = write(tmp_path, text)
    proc = subprocess.run([CELLGATE, "agent", "--gateway", "http://127.0.0.1:9",
                           "--token", "t", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"{path}: {field}:" in proc.stderr


def test_cli_needs_a_token(tmp_path):
    path = write(tmp_path, '[targets.x]\nkind = "python"\n')
    env = {k: v for k, v in os.environ.items() if k != "CELLGATE_AGENT_TOKEN"}
    proc = subprocess.run([CELLGATE, "agent", "--gateway", "http://127.0.0.1:9",
                           "--config", str(path)], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 2 and "CELLGATE_AGENT_TOKEN" in proc.stderr


# -- the Agent's settings (traitlets): flags > config file > environment; the targets file is data

def agent(tmp_path, config_py=None, flags=None):
    """An ``Agent`` configured as `cellgate agent` would be: ``flags`` (trait → value) over
    ``config_py`` (the text of a cellgate_config.py) over the environment."""
    from cellgate.agent.app import Agent

    app = Agent()
    flags = dict(flags or {})
    flags.setdefault("config_file", str(tmp_path / "cellgate_config.py"))
    if config_py is not None:
        (tmp_path / "cellgate_config.py").write_text(config_py)
    app.configure(flags)
    return app


def test_flags_win_over_the_config_file_which_wins_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLGATE_URL", "http://env.example:1")
    monkeypatch.setenv("CELLGATE_AGENT_TOKEN", "env-token")
    assert (agent(tmp_path).gateway_url, agent(tmp_path).read_token()) == ("http://env.example:1", "env-token")
    config_py = 'c.Agent.gateway_url = "http://file.example:2"\nc.Agent.kernel_start_timeout = 7.5\n'
    from_file = agent(tmp_path, config_py)
    assert (from_file.gateway_url, from_file.kernel_start_timeout) == ("http://file.example:2", 7.5)
    assert from_file.timeouts().kernel_start == 7.5
    flagged = agent(tmp_path, config_py, {"gateway_url": "http://flag.example:3", "kernel_start_timeout": 3.0})
    assert (flagged.gateway_url, flagged.timeouts().kernel_start) == ("http://flag.example:3", 3.0)


def test_the_token_comes_from_the_most_preferred_place(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLGATE_AGENT_TOKEN", "env-token")
    token_file = tmp_path / "agent.token"
    token_file.write_text("file-token\n")
    token_file.chmod(0o600)
    config_py = f'c.Agent.token_file = "{token_file}"\n'
    assert agent(tmp_path, config_py).read_token() == "file-token"  # config file over env
    assert agent(tmp_path, config_py, {"token": "flag-token"}).read_token() == "flag-token"  # flag over file
    (tmp_path / "cellgate_config.py").chmod(0o600)
    assert agent(tmp_path, 'c.Agent.token = "inline-token"\n').read_token() == "inline-token"
    (tmp_path / "cellgate_config.py").chmod(0o644)
    with pytest.raises(ValueError, match=r"c.Agent.token is set in .*readable by group or others \(mode 644\): "
                                         r"run `chmod 600 .*` or use c.Agent.token_file"):
        agent(tmp_path, 'c.Agent.token = "inline-token"\n').read_token()
    with pytest.raises(ValueError, match=r"both set in .*keep one"):
        agent(tmp_path, config_py + 'c.Agent.token = "x"\n').read_token()
    token_file.chmod(0o640)
    with pytest.raises(ValueError, match=r"--token-file \(Agent.token_file\): .* is readable by group or others "
                                         r"\(mode 640\): run `chmod 600"):
        agent(tmp_path, config_py).read_token()


@pytest.mark.parametrize("setting, value, message", [
    ("kernel_start_timeout", 0, r"Agent.kernel_start_timeout must be more than 0 and at most 86400 seconds, not 0"),
    ("explain_timeout", -1.0, r"Agent.explain_timeout must be more than 0 .* not -1"),
    ("uid_kill_timeout", 1e6, r"Agent.uid_kill_timeout must be more than 0 .* not 1000000"),
    ("kernel_uids", "0-10", r'Agent.kernel_uids must be a range "FIRST-LAST" of unused uids >= 1000, e.g. "61000-61999"'),
    ("kernel_isolation", "none", r"Agent.kernel_isolation must be one of 'uid', 'off', got 'none'"),
    ("runtime_dir", "run", r"Agent.runtime_dir must be an absolute path, got 'run'"),
    ("agent_id", " ", r"Agent.agent_id must be a non-empty string"),
    ("gateway_url", "ftp://gw", r"Agent.gateway_url \(--gateway, env CELLGATE_URL\) must start with http://, .* "
                                r"got 'ftp://gw': e.g. --gateway https://"),
])
def test_bad_settings_name_the_trait_and_the_fix(tmp_path, setting, value, message):
    from traitlets import TraitError

    with pytest.raises(TraitError, match=message):
        agent(tmp_path, f"c.Agent.{setting} = {value!r}\n")
    with pytest.raises(TraitError, match=message):
        agent(tmp_path, flags={setting: value})


def test_settings_checked_together_and_from_the_environment(tmp_path, monkeypatch):
    from traitlets import TraitError

    with pytest.raises(TraitError, match=r"Agent.reconnect_delay_max \(1\) must be at least Agent.reconnect_delay_min "
                                         r"\(2\): raise it or lower the other"):
        agent(tmp_path, "c.Agent.reconnect_delay_min = 2.0\nc.Agent.reconnect_delay_max = 1.0\n")
    monkeypatch.setenv("CELLGATE_URL", "gw.example")
    with pytest.raises(TraitError, match=r"Agent.gateway_url .* got 'gw.example'"):
        agent(tmp_path)


def test_a_config_file_that_fails_or_that_anyone_may_change_is_refused(tmp_path):
    from traitlets import TraitError

    with pytest.raises(TraitError, match=r"Agent.config_file .* failed to run: NameError: .*fix the file"):
        agent(tmp_path, "c.Agent.kernel_start_timeout = sixty\n")
    (tmp_path / "cellgate_config.py").write_text("")
    (tmp_path / "cellgate_config.py").chmod(0o666)
    with pytest.raises(TraitError, match=r"can be changed by any user \(mode 666\) and cellgate runs it: run `chmod o-w"):
        agent(tmp_path)


def test_the_targets_file_stays_data_and_its_agent_table_fills_the_traits(tmp_path):
    toml = write(tmp_path, '[agent]\nid = "from-toml"\ntags = ["eu"]\nkernel_uids = "70000 - 70009"\n'
                           '[targets.x]\nkind = "sql"\nurl_env = "X_URL"\nkernel_gid = 61005\n')
    app = agent(tmp_path, flags={"targets_file": str(toml)})
    config = app.load_targets({"X_URL": "postgresql://u@db/x"})
    assert (config.agent_id, config.tags, config.kernel_uids) == ("from-toml", ["eu"], (70000, 70009))
    assert (app.agent_id, app.kernel_uids) == ("from-toml", "70000-70009")
    assert config.targets["x"].url == "postgresql://u@db/x" and config.targets["x"].dialect == "postgresql"
    # a flag wins over the table; the config file and the table may not both set one setting
    assert agent(tmp_path, flags={"targets_file": str(toml), "agent_id": "flagged"}).load_targets(
        {"X_URL": "sqlite://"}).agent_id == "flagged"
    with pytest.raises(ConfigError) as info:
        agent(tmp_path, 'c.Agent.agent_id = "from-py"\n', {"targets_file": str(toml)}).load_targets({"X_URL": "sqlite://"})
    assert info.value.field == "agent.id" and "also set as c.Agent.agent_id in" in str(info.value)
    # kernel_gid is checked against the uids in force, wherever they are set
    toml = write(tmp_path, '[targets.x]\nkind = "python"\nkernel_gid = 70005\n')
    assert agent(tmp_path, flags={"targets_file": str(toml)}).load_targets({}).kernel_uids == (61000, 61999)
    with pytest.raises(ConfigError, match=r"targets.x.kernel_gid: 70005 is inside Agent.kernel_uids \(70000-70009\)"):
        agent(tmp_path, 'c.Agent.kernel_uids = "70000-70009"\n', {"targets_file": str(toml)}).load_targets({})
    # its validation errors are the file's, as before
    bad = write(tmp_path, '[targets.x]\nkind = "mongo"\n')
    with pytest.raises(ConfigError, match=r"agent.toml: targets.x.kind: must be one of 'python', 'sql', got 'mongo'"):
        agent(tmp_path, flags={"targets_file": str(bad)}).load_targets({})


def test_no_targets_file_says_how_to_give_one(tmp_path):
    from traitlets import TraitError

    with pytest.raises(TraitError, match=r"Agent.targets_file is not set: pass --config FILE"):
        agent(tmp_path).load_targets({})


def test_cli_flags_config_file_and_environment(tmp_path):
    """Through `cellgate agent`: the config file in the working directory beats the environment,
    a flag beats the config file."""
    toml = write(tmp_path, '[targets.x]\nkind = "mongo"\n')
    (tmp_path / "cellgate_config.py").write_text('c.Agent.gateway_url = "ftp://from-the-file"\n')
    env = {**os.environ, "CELLGATE_URL": "http://127.0.0.1:9"}

    def agent_cli(*flags):
        return subprocess.run([CELLGATE, "agent", "--token", "t", "--config", str(toml), *flags],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)

    proc = agent_cli()
    assert proc.returncode == 2 and "Agent.gateway_url" in proc.stderr and "'ftp://from-the-file'" in proc.stderr
    proc = agent_cli("--gateway", "http://127.0.0.1:9")  # the flag wins: the run goes on to the targets file
    assert proc.returncode == 2 and f"{toml}: targets.x.kind:" in proc.stderr
    (tmp_path / "other.py").write_text("")
    proc = agent_cli("--config-file", str(tmp_path / "other.py"))  # another config file: the env's URL
    assert proc.returncode == 2 and f"{toml}: targets.x.kind:" in proc.stderr


def test_every_flag_is_an_alias_of_a_trait():
    from cellgate.agent.app import AGENT_TABLE, Agent
    from cellgate.agent.config import AGENT_KEYS
    from cellgate.cli.cmd_agent import flag_values
    from cellgate.cli.main import build_parser

    traits = Agent.class_traits(config=True)
    for flag, trait in Agent.aliases.items():
        value = "INFO" if flag == "log-level" else "http://gw:1"
        args = build_parser().parse_args(["agent", f"--{flag}", value])
        assert flag_values(args, Agent.aliases) == {trait.split(".", 1)[1]: 20 if flag == "log-level" else value}
        assert trait.split(".", 1)[0] == "Agent" and trait.split(".", 1)[1] in traits
    assert set(AGENT_TABLE) == AGENT_KEYS and set(AGENT_TABLE.values()) <= set(traits)


# -- timeouts and intervals: settings, passed down to where they are used

def test_every_timeout_is_a_trait_with_the_same_default_and_is_used():
    import dataclasses
    import re
    from pathlib import Path

    from cellgate.agent.app import TIMEOUT_FIELDS, Agent
    from cellgate.agent.timeouts import Timeouts

    fields = {f.name: f.default for f in dataclasses.fields(Timeouts)}
    assert sorted(TIMEOUT_FIELDS.values()) == sorted(fields)
    assert {trait: Agent.class_traits()[trait].default_value for trait in TIMEOUT_FIELDS} == \
        {trait: fields[field] for trait, field in TIMEOUT_FIELDS.items()}
    agent_dir = Path(__file__).resolve().parents[2] / "agent"
    code = "".join(p.read_text() for p in agent_dir.glob("*.py") if p.name != "timeouts.py")
    used = set(re.findall(r"\btimeouts\.(\w+)", code))
    assert set(fields) <= used, f"Timeouts fields nobody reads: {set(fields) - used}"
    # no number of seconds left in the agent's code as a constant, a default or an argument (the
    # 20 ms pause between SIGKILL rounds in isolation.kill_uid is bounded by its timeout)
    assert not re.findall(r"^[A-Z_]*(TIMEOUT|INTERVAL|DELAY)[A-Z_]* = [\d.]+$", code, re.MULTILINE)
    literal = (r"wait_for\([^)]*,\s*\d|sleep\((?!0\.02\))\d"  # (statement_timeout: the targets', data)
               r"|(?<![\w.])(?!statement_timeout)\w*(timeout|interval|wait_time|delay)\w*\s*(: float)?\s*=\s*\d")
    assert not [m.group(0) for m in re.finditer(literal, code)]


def test_the_configured_timeouts_reach_the_connection_the_kernel_host_and_explain(tmp_path, monkeypatch):
    from cellgate.agent import explain
    from cellgate.agent.app import TIMEOUT_FIELDS
    from cellgate.agent.runtime import AgentRuntime
    from cellgate.protocol import Explain

    toml = write(tmp_path, '[agent]\nkernel_isolation = "off"\n[targets.x]\nkind = "sql"\nurl = "sqlite:///x.db"\n')
    config_py = "".join(f"c.Agent.{trait} = {n + 1.25}\n" for n, trait in enumerate(TIMEOUT_FIELDS))
    app = agent(tmp_path, config_py, {"targets_file": str(toml)})
    timeouts = app.timeouts()
    assert [getattr(timeouts, f) for f in TIMEOUT_FIELDS.values()] == [n + 1.25 for n in range(len(TIMEOUT_FIELDS))]
    runtime = AgentRuntime(app.load_targets({}), "http://127.0.0.1:9", "t", timeouts)
    try:
        connection = runtime.connection
        assert connection._backoff == (timeouts.reconnect_min, timeouts.reconnect_max)
        assert (connection._connect_timeout, connection._ws_ping_interval) == (timeouts.connect, timeouts.ws_ping)
        assert runtime.host.timeouts is timeouts
        seen = {}
        monkeypatch.setattr(explain, "estimate", lambda target, statements, statement_timeout: seen.update(
            timeout=statement_timeout) or [1])
        import asyncio
        assert asyncio.run(runtime._explain(Explain(req_id="r", target="x", statements=["DELETE FROM t"]))) == {"rows": [1]}
        assert seen == {"timeout": timeouts.explain}
    finally:
        runtime.host.close()


def test_a_small_kernel_start_timeout_takes_effect(tmp_path):
    """Through `cellgate agent` and its config file: a kernel that is not ready within
    Agent.kernel_start_timeout fails to start, and the gateway is told why."""
    import asyncio
    import uuid

    from agent_harness import KERNEL_UIDS, running

    toml = write(tmp_path, f'[agent]\nkernel_uids = "{KERNEL_UIDS}"\n[targets.x]\nkind = "python"\n')
    config_py = tmp_path / "agent_config.py"
    config_py.write_text("c.Agent.kernel_start_timeout = 0.05\nc.Agent.kernel_probe_interval = 0.05\n")

    async def scenario():
        async with running(toml, args=("--config-file", str(config_py))) as (gw, agent_process):
            await asyncio.wait_for(gw.hellos.get(), 15)
            reply = await gw.request("kernel_start", kernel_id=str(uuid.uuid4()), target="x")
            assert reply["ok"] is False
            assert "not ready within 0.05 s (Agent.kernel_start_timeout)" in reply["error"]
            assert await agent_process.stop() == 0

    asyncio.run(scenario())


# -- the secret-file check is written once

def test_one_secret_file_check():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    copies = [f"{path.relative_to(root)}:{n}" for directory in ("agent", "cellgate") for path in (root / directory).rglob("*.py")
              if path.name != "secret_files.py"
              for n, line in enumerate(path.read_text().splitlines(), 1)
              if re.search(r"&\s*(0o0?77|stat\.S_IRWX)", line) and "``" not in line]
    assert copies == [], "use cellgate.secret_files instead"


# -- docs

def test_docs_list_every_setting():
    from pathlib import Path

    from cellgate.agent.app import Agent, settings_table

    docs = (Path(__file__).resolve().parents[2] / "docs" / "agent.md").read_text()
    assert settings_table() in docs, ("docs/agent.md's settings table is out of date; print the new one with "
                                      "python -c 'from cellgate.agent.app import settings_table; print(settings_table())'")
    for name in Agent.class_own_traits(config=True):
        assert f"`c.Agent.{name}`" in docs

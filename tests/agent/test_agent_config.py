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

"""The read-only credential in the agent config: where it comes from, where it goes, where it never goes."""

from __future__ import annotations

import pytest

from cellgate.agent.config import ConfigError, load_config
from cellgate.agent.kernels import kernel_env


def _write(tmp_path, text: str):
    path = tmp_path / "agent.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_readonly_url_sources_resolve_and_stay_secret(tmp_path):
    ro_file = tmp_path / "ro.url"
    ro_file.write_text("mariadb://ro:file-ro-pw@db/orders\n")
    ro_file.chmod(0o600)
    path = _write(tmp_path, f"""
[targets.pay]
kind = "sql"
url = "postgresql://app@db/pay"
readonly_url_env = "PAY_RO_URL"

[targets.orders]
kind = "sql"
url = "mysql://app@db/orders"
readonly_url_file = "{ro_file}"

[targets.lite]
kind = "sql"
url = "sqlite:///x.db"
""")
    config = load_config(path, {"PAY_RO_URL": "postgresql://ro:env-ro-pw@db/pay"})
    pay, orders, lite = config.targets["pay"], config.targets["orders"], config.targets["lite"]
    assert pay.readonly_url == "postgresql://ro:env-ro-pw@db/pay"
    assert orders.readonly_url == "mariadb://ro:file-ro-pw@db/orders"
    assert lite.readonly_url is None
    for target in (pay, orders):
        assert "ro-pw" not in repr(target) and "ro-pw" not in repr(target.announce())
    env = kernel_env(pay, {}, {"PAY_RO_URL": "postgresql://ro:env-ro-pw@db/pay", "PATH": "/bin"})
    assert env["CELLGATE_TARGET_READONLY_URL"] == "postgresql://ro:env-ro-pw@db/pay"
    assert "PAY_RO_URL" not in env
    assert "CELLGATE_TARGET_READONLY_URL" not in kernel_env(lite, {"KERNEL_X": "1"}, {})


@pytest.mark.parametrize("extra,field,message", [
    ('readonly_url_env = "NOPE_UNSET"', "targets.x.readonly_url_env", "not set or empty"),
    ('readonly_url = "postgresql://ro@db/x"\nreadonly_url_env = "RO"', "targets.x.readonly_url", "set only one of"),
    ('readonly_url = "mysql://ro@db/x"', "targets.x.readonly_url", "same database"),
    ('readonly_url = "mongodb://ro@db/x"', "targets.x.readonly_url", "unsupported URL scheme"),
    ('readonly_url = ""', "targets.x.readonly_url", "non-empty string"),
])
def test_readonly_url_errors(tmp_path, extra, field, message):
    path = _write(tmp_path, f'[targets.x]\nkind = "sql"\nurl = "postgresql://app@db/x"\n{extra}\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, {"RO": "postgresql://ro@db/x"})
    assert info.value.field == field and message in info.value.message


def test_readonly_url_is_for_sql_targets_only(tmp_path):
    path = _write(tmp_path, '[targets.py]\nkind = "python"\nreadonly_url = "sqlite:///x.db"\n')
    with pytest.raises(ConfigError, match=r"targets.py.readonly_url: a read-only credential is for sql targets only"):
        load_config(path, {})


def test_readable_readonly_url_file_is_refused(tmp_path):
    ro_file = tmp_path / "ro.url"
    ro_file.write_text("postgresql://ro:pw@db/x")
    ro_file.chmod(0o640)
    path = _write(tmp_path, f'[targets.x]\nkind = "sql"\nurl = "postgresql://app@db/x"\nreadonly_url_file = "{ro_file}"\n')
    with pytest.raises(ConfigError, match=r"targets.x.readonly_url_file: .*readable by group or others"):
        load_config(path, {})

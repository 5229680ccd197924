"""The SQL kernel's pure parts: settings, redaction, statement splitting, rendering."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid

import pytest

from cellgate.kernels.sql import render
from cellgate.kernels.sql.dialects import ResultSet, status_text
from cellgate.kernels.sql.split import split_statements
from cellgate.kernels.sql.target import ConfigError, Settings, parse_target_url, redact


@pytest.mark.parametrize(
    "url,dialect,host,port,database",
    [
        ("postgresql://u:p@db.example:5433/app", "postgresql", "db.example", 5433, "app"),
        ("postgres://u@h/app", "postgresql", "h", None, "app"),
        ("postgresql+psycopg://u:p@h:5432/app", "postgresql", "h", 5432, "app"),
        ("mysql://root@127.0.0.1:3306/test", "mysql", "127.0.0.1", 3306, "test"),
        ("mariadb://root:x@h/test", "mysql", "h", None, "test"),
        ("mysql+pymysql://root:x@h/test", "mysql", "h", None, "test"),
        ("sqlite:///relative/x.db", "sqlite", None, None, "relative/x.db"),
        ("sqlite:////abs/x.db", "sqlite", None, None, "/abs/x.db"),
        ("sqlite://", "sqlite", None, None, ":memory:"),
    ],
)
def test_parse_target_url(url, dialect, host, port, database):
    target = parse_target_url(url)
    assert (target.dialect, target.host, target.port, target.database) == (dialect, host, port, database)


def test_password_is_decoded_but_never_displayed():
    target = parse_target_url("postgresql://alice:p%40ss%3Aw0rd@h:5432/app")
    assert target.password == "p@ss:w0rd"
    assert target.display() == "postgresql://alice@h:5432/app"
    assert "p@ss" not in repr(target)
    assert set(target.secrets()) == {"p%40ss%3Aw0rd", "p@ss:w0rd"}
    assert parse_target_url("postgresql://h/db?password=qs-secret").secrets() == ["qs-secret"]


def test_redact_masks_secrets_and_url_credentials():
    target = parse_target_url("mysql://root:hunter2@h/db")
    text = 'failed for "hunter2" via mysql://root:hunter2@h/db and postgresql://bob:other@x/y'
    out = redact(text, target.secrets())
    assert "hunter2" not in out and "other" not in out
    assert "mysql://root:********@h/db" in out and "postgresql://bob:********@x/y" in out


def test_settings_from_env():
    s = Settings.from_env({"CELLGATE_TARGET_URL": "sqlite://", "CELLGATE_ROW_LIMIT": "10", "CELLGATE_STATEMENT_TIMEOUT": "2.5"})
    assert (s.row_limit, s.statement_timeout) == (10, 2.5)
    assert Settings.from_env({"CELLGATE_TARGET_URL": "sqlite://"}).row_limit == 1000
    with pytest.raises(ConfigError, match="CELLGATE_TARGET_URL is not set"):
        Settings.from_env({})
    with pytest.raises(ConfigError, match="CELLGATE_ROW_LIMIT"):
        Settings.from_env({"CELLGATE_TARGET_URL": "sqlite://", "CELLGATE_ROW_LIMIT": "many"})


def test_unsupported_scheme_error_does_not_quote_the_url():
    with pytest.raises(ConfigError) as info:
        parse_target_url("oracle://scott:tiger@h/db")
    assert "tiger" not in str(info.value)


@pytest.mark.parametrize(
    "sql,dialect,expected",
    [
        ("SELECT 1; SELECT 2;", "postgresql", ["SELECT 1", "SELECT 2"]),
        ("SELECT 'a;b', $$x;y$$; -- c;\nSELECT 2", "postgresql", ["SELECT 'a;b', $$x;y$$", "-- c;\nSELECT 2"]),
        ("SELECT 'a\\';b'; # x;\nSELECT `a;b`", "mysql", ["SELECT 'a\\';b'", "# x;\nSELECT `a;b`"]),
        ("  -- nothing here\n", "postgresql", []),
        (
            "CREATE TRIGGER t AFTER INSERT ON x BEGIN UPDATE y SET a = 1; END; SELECT ';'",
            "sqlite",
            ["CREATE TRIGGER t AFTER INSERT ON x BEGIN UPDATE y SET a = 1; END", "SELECT ';'"],
        ),
        (" -- only a comment;\n", "sqlite", []),
    ],
)
def test_split_statements(sql, dialect, expected):
    assert split_statements(sql, dialect) == expected


def test_status_text():
    assert status_text("-- why\nUPDATE t SET a = 1", 3) == "UPDATE 3"
    assert status_text("create table t (a int)", 0) == "CREATE"
    assert status_text("DELETE FROM t", -1) == "DELETE"


def test_render_bundle_is_json_safe_and_escaped():
    result = ResultSet(
        ["n", "d", "when", "blob", "id", "x", "x"],
        [(1, decimal.Decimal("1.10"), dt.datetime(2024, 1, 2, 3, 4, 5), b"\x00\xff", uuid.UUID(int=1), "<i>", None)],
        truncated=True,
        more=41,
    )
    data, metadata = render.bundle(result)
    table = data[render.MIMETYPE_TABLE]
    assert json.loads(json.dumps(table)) == table
    assert [f["name"] for f in table["schema"]["fields"]] == ["n", "d", "when", "blob", "id", "x", "x_2"]
    assert table["data"][0]["d"] == "1.10" and table["data"][0]["blob"] == "\\x00ff"
    assert table["data"][0]["when"] == "2024-01-02T03:04:05"
    assert "&lt;i&gt;" in data["text/html"] and "<i>" not in data["text/html"].replace("<i>NULL</i>", "")
    assert "41 more rows not shown" in data["text/plain"]
    assert metadata["cellgate"] == {"rows": 1, "truncated": True, "more_rows": 41}


def test_render_unknown_total():
    result = ResultSet(["a"], [(1,), (2,)], truncated=True, more=None)
    assert render.footer(result) == "(2 rows shown; more rows not shown (limit 2))"

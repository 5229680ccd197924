"""The read-only credential recipe (tests/readonly_roles.py, docs/agent.md) on throw-away databases:
the server itself refuses what a plain SELECT would reach through objects a DBA made, the recipe
is idempotent, and the documented SQL is the one the tests run."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import psycopg
import pymysql
import pytest
from readonly_roles import PASSWORD, PG_GRANTS, as_role, mariadb_readonly_url, pg_readonly_url
from sql_kernel_harness import require_mariadb, require_postgres

DOCS = (Path(__file__).parents[2] / "docs" / "agent.md").read_text()

PG_OBJECTS = r"""
CREATE EXTENSION file_fdw;
CREATE SCHEMA reporting;
CREATE TABLE t (a int); INSERT INTO t VALUES (1);
CREATE TABLE parted (a int) PARTITION BY RANGE (a);
CREATE FUNCTION reporting.definer() RETURNS bool LANGUAGE sql SECURITY DEFINER AS 'SELECT true';
CREATE PROCEDURE reporting.proc() LANGUAGE sql AS 'SELECT 1';
CREATE VIEW calls_definer AS SELECT reporting.definer() AS n;
CREATE VIEW plain_view AS SELECT a FROM t;
CREATE TABLE guarded (a int); ALTER TABLE guarded ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON guarded USING (reporting.definer());
CREATE SERVER files FOREIGN DATA WRAPPER file_fdw;
CREATE FOREIGN TABLE reporting.program_table (line text) SERVER files OPTIONS (program 'echo x', format 'text');
CREATE VIEW over_foreign AS SELECT * FROM reporting.program_table;
CREATE VIEW over_over_foreign AS SELECT * FROM over_foreign;
CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n FROM t;
"""

PG_CHECK = DOCS[DOCS.index("-- user-defined routines cellgate_ro may execute"):DOCS.index("-- expected: no rows")]


def test_the_docs_carry_the_postgres_block_verbatim():
    assert PG_GRANTS in DOCS


@pytest.mark.postgres
def test_postgres_recipe_refuses_what_dba_objects_reach():
    require_postgres()
    name = f"cg_ro_recipe_{uuid.uuid4().hex[:8]}"
    server = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    admin = f"postgresql://postgres@127.0.0.1:5432/{name}"
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(PG_OBJECTS)
        url = pg_readonly_url(admin)
        assert pg_readonly_url(admin) == url  # idempotent
        with psycopg.connect(admin, autocommit=True) as conn:
            assert conn.execute(as_role(PG_CHECK)).fetchall() == []
        refused = {
            "SELECT * FROM calls_definer": "permission denied for function definer",
            "SELECT * FROM guarded": "permission denied for function definer",
            "SELECT reporting.definer()": "permission denied for function definer",
            "CALL reporting.proc()": "permission denied for procedure proc",
            "SELECT * FROM reporting.program_table": "permission denied for foreign table program_table",
            "SELECT * FROM over_foreign": "permission denied for view over_foreign",
            "SELECT * FROM over_over_foreign": "permission denied for view over_over_foreign",
        }
        with psycopg.connect(url, autocommit=True) as ro:
            for sql, message in refused.items():
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match=message):
                    ro.execute(sql)
            for sql in ("SELECT a FROM t", "SELECT a FROM plain_view", "SELECT n FROM totals", "SELECT * FROM parted"):
                ro.execute(sql).fetchall()
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


MARIA_OBJECTS = [
    "CREATE TABLE t (a INT)", "INSERT INTO t VALUES (1)",
    "CREATE TABLE `odd``name` (a INT)",
    "CREATE FUNCTION f() RETURNS INT RETURN 1",
    "CREATE VIEW definer_view AS SELECT f() AS n",
    "CREATE SQL SECURITY INVOKER VIEW invoker_view AS SELECT a FROM t",
    "CREATE SQL SECURITY INVOKER VIEW invoker_calls_f AS SELECT f() AS n",
    "CREATE SEQUENCE s",
]


def _maria(db: str | None = None, user: str = "root", password: str = "") -> pymysql.connections.Connection:
    return pymysql.connect(host="127.0.0.1", user=user, password=password, database=db, autocommit=True)


def _grants(cur, user: str) -> set[str]:
    found = set()
    for host in ("%", "localhost"):
        cur.execute(f"SHOW GRANTS FOR '{user}'@'{host}'")
        found |= {re.sub(r" IDENTIFIED BY PASSWORD '[^']*'", "", g) for (g,) in cur.fetchall()}
    return found


@pytest.mark.mariadb
def test_mariadb_recipe_grants_base_tables_and_invoker_views_only():
    require_mariadb()
    db = f"cg_ro_recipe_{uuid.uuid4().hex[:8]}"
    user, doc_user, admin_db = f"{db}_ro", f"{db}_doc", f"{db}_admin"
    root = _maria()
    try:
        with root.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{db}`")
            cur.execute(f"USE `{db}`")
            for statement in MARIA_OBJECTS:
                cur.execute(statement)
            for host in ("%", "localhost"):  # a privilege the recipe must take away
                cur.execute(f"CREATE USER '{user}'@'{host}'")
                cur.execute(f"GRANT SELECT ON `{db}`.* TO '{user}'@'{host}'")
            cur.execute(f"GRANT FILE ON *.* TO '{user}'@'%'")
        mariadb_readonly_url(database=db, user=user, password=PASSWORD)
        mariadb_readonly_url(database=db, user=user, password=PASSWORD)  # idempotent
        readable = ["invoker_calls_f", "invoker_view", "odd``name", "t"]
        with root.cursor() as cur:
            expected = {f"GRANT USAGE ON *.* TO `{user}`@`{h}`" for h in ("%", "localhost")} | {
                f"GRANT SELECT ON `{db}`.`{t}` TO `{user}`@`{h}`" for t in readable for h in ("%", "localhost")}
            assert _grants(cur, user) == expected
        ro = _maria(db, user, PASSWORD)
        with ro.cursor() as cur:
            cur.execute("SELECT a FROM invoker_view")
            assert cur.fetchall() == ((1,),)
            for sql, code in (("SELECT * FROM definer_view", 1142), ("SELECT * FROM invoker_calls_f", 1356),
                              ("SELECT f()", 1370), ("SELECT * FROM s", 1142),
                              ("SELECT 1 INTO OUTFILE '/tmp/cg-ro-recipe-never'", 1227)):
                with pytest.raises(pymysql.err.MySQLError) as info:
                    cur.execute(sql)
                assert info.value.args[0] == code, (sql, info.value)
        ro.close()

        # the documented procedure, for another user in another admin schema, grants the same
        block = DOCS[DOCS.index("DELIMITER //") + len("DELIMITER //"):DOCS.index("DELIMITER ;")]
        procedure = block.strip().removesuffix("//").replace("cellgate_admin.", f"`{admin_db}`.")
        procedure = procedure.replace("'cellgate_ro'", f"'{doc_user}'")  # the accounts, not the name
        with root.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{admin_db}`")
            for host in ("%", "localhost"):
                cur.execute(f"CREATE USER '{doc_user}'@'{host}'")
            cur.execute(f"GRANT FILE ON *.* TO '{doc_user}'@'%'")
            cur.execute(procedure)
            for _ in range(2):
                cur.execute(f"CALL `{admin_db}`.cellgate_ro_grants(%s)", (db,))
            assert _grants(cur, doc_user) == {g.replace(user, doc_user) for g in expected}
    finally:
        with root.cursor() as cur:
            for who in (user, doc_user):
                for host in ("%", "localhost"):
                    cur.execute(f"DROP USER IF EXISTS '{who}'@'{host}'")
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
            cur.execute(f"DROP DATABASE IF EXISTS `{admin_db}`")
        root.close()

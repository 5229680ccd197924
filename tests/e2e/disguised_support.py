"""The databases behind ``test_e2e_disguised.py``: build them, fingerprint them, restore them.

A :class:`Dataset` owns one database of a dialect (PostgreSQL, MariaDB, SQLite), created fresh
for the test module with the sample tables, the deny-listed ``audit_log``, a sequence, the
user-defined functions that write (created as the superuser), a read-only account for the
kernel's read-only mode and a *sentinel* connection the cases try to end.

:meth:`Dataset.fingerprint` is everything a disguised write could change that another session
can observe: row counts and content hashes of every table, sequences, catalog counts, files
under the test's ``/tmp/cellgate-dz-*`` directory, the sentinel still alive, advisory or
``GET_LOCK`` locks held, open transactions. Two fingerprints are compared with :func:`diff`.
:meth:`Dataset.restore` rebuilds everything after a case changed it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pymysql
from readonly_roles import mariadb_readonly_url, pg_readonly_url

PG_HOST = "127.0.0.1"
PG_SUPER = "postgres"


def substitute(code: str, values: dict[str, str]) -> str:
    """Replace the ``%NAME%`` placeholders of a case (see ``disguised_cases``); all must be known."""
    for key, value in values.items():
        code = code.replace(f"%{key}%", value)
    left = re.findall(r"%[A-Z_]+%", code)
    assert not left, f"unknown placeholders {left} in {code!r}: add them to the dataset's placeholders()"
    return code


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The keys whose values differ, as readable lines (empty: nothing changed)."""
    lines = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            lines.append(f"{key}: {before.get(key, '<absent>')!r} -> {after.get(key, '<absent>')!r}")
    return lines


def files_fingerprint(root: Path) -> dict[str, Any]:
    """Every file under ``root``: size and content hash (``file:<relative path>``)."""
    found: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            found[f"file:{path.relative_to(root)}"] = (len(data), hashlib.sha256(data).hexdigest()[:16])
    return found


def make_root() -> Path:
    """``/tmp/cellgate-dz-<hex>`` with ``out/`` (where cases try to write) and ``lite/``, writable by
    the database servers and by kernels running as other uids."""
    root = Path(f"/tmp/cellgate-dz-{uuid.uuid4().hex[:8]}")
    for sub in (root, root / "out", root / "lite"):
        sub.mkdir()
        sub.chmod(0o777)
    return root


def clean_out(root: Path) -> None:
    for path in (root / "out").iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


@dataclass
class Dataset:
    root: Path
    name: str = field(default_factory=lambda: f"cg_dz_{uuid.uuid4().hex[:8]}")

    @property
    def out(self) -> Path:
        return self.root / "out"

    def placeholders(self) -> dict[str, str]:
        return {"TMP": str(self.out), "DB": self.name, "SENTINEL": str(self.sentinel_id())}

    def sentinel_id(self) -> int:
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        raise NotImplementedError

    def restore(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


# ------------------------------------------------------------------------------ PostgreSQL
PG_SETUP = r"""
CREATE EXTENSION IF NOT EXISTS dblink;
CREATE EXTENSION IF NOT EXISTS adminpack;
CREATE EXTENSION IF NOT EXISTS file_fdw;
CREATE TABLE accounts (id int PRIMARY KEY, holder text, balance int);
INSERT INTO accounts SELECT g, 'holder ' || g, g * 100 FROM generate_series(1, 20) g;
CREATE SEQUENCE order_seq START 100;
CREATE TABLE orders (id int PRIMARY KEY DEFAULT nextval('order_seq'), account_id int, amount int);
INSERT INTO orders (id, account_id, amount) SELECT g, g, g FROM generate_series(1, 10) g;
CREATE TABLE audit_log (id serial PRIMARY KEY, what text);
INSERT INTO audit_log (what) SELECT 'event ' || g FROM generate_series(1, 5) g;
CREATE SCHEMA reporting;
CREATE TABLE reporting.daily (day int, total int);
INSERT INTO reporting.daily VALUES (1, 10), (2, 20), (3, 30);
CREATE MATERIALIZED VIEW account_totals AS SELECT count(*) AS n, sum(balance) AS total FROM accounts;
CREATE FUNCTION archive_everything() RETURNS int LANGUAGE plpgsql AS $$BEGIN DELETE FROM accounts; RETURN 1; END$$;
CREATE FUNCTION add_order(a int) RETURNS int LANGUAGE sql
    AS $$INSERT INTO orders (account_id, amount) VALUES (a, 1) RETURNING 1$$;
CREATE FUNCTION drop_audit() RETURNS int LANGUAGE plpgsql AS $$BEGIN DROP TABLE audit_log; RETURN 1; END$$;
CREATE FUNCTION run_sql(q text) RETURNS int LANGUAGE plpgsql AS $$BEGIN EXECUTE q; RETURN 1; END$$;
CREATE FUNCTION balance_of(a int) RETURNS int LANGUAGE plpgsql
    AS $$BEGIN UPDATE accounts SET balance = 0 WHERE id = a; RETURN 0; END$$;
CREATE FUNCTION reporting.refresh() RETURNS int LANGUAGE plpgsql AS $$BEGIN TRUNCATE reporting.daily; RETURN 1; END$$;
CREATE FUNCTION "Report"() RETURNS int LANGUAGE plpgsql AS $$BEGIN DELETE FROM orders; RETURN 1; END$$;
CREATE FUNCTION op_write(int, int) RETURNS int LANGUAGE plpgsql AS $$BEGIN DELETE FROM orders; RETURN $1 + $2; END$$;
CREATE OPERATOR ### (LEFTARG = int, RIGHTARG = int, FUNCTION = op_write);
CREATE FUNCTION w_sfunc(int, int) RETURNS int LANGUAGE plpgsql
    AS $$BEGIN INSERT INTO audit_log (what) VALUES ('agg'); RETURN coalesce($1, 0) + $2; END$$;
CREATE AGGREGATE total_of(int) (SFUNC = w_sfunc, STYPE = int);
CREATE FUNCTION public.length(accounts) RETURNS int LANGUAGE plpgsql AS $$BEGIN DELETE FROM orders; RETURN 1; END$$;
CREATE FUNCTION purge_row(accounts) RETURNS int LANGUAGE plpgsql
    AS $$BEGIN DELETE FROM orders WHERE account_id = $1.id; RETURN 1; END$$;
CREATE VIEW account_report AS SELECT id, archive_everything() AS n FROM accounts;
CREATE FUNCTION definer_delete() RETURNS int LANGUAGE plpgsql SECURITY DEFINER
    AS $$BEGIN DELETE FROM orders; RETURN 1; END$$;
CREATE FUNCTION definer_blob() RETURNS oid LANGUAGE sql SECURITY DEFINER AS $$SELECT lo_from_bytea(0, 'x'::bytea)$$;
CREATE FUNCTION definer_kill(p int) RETURNS bool LANGUAGE sql SECURITY DEFINER AS $$SELECT pg_terminate_backend(p)$$;
CREATE PROCEDURE purge_proc() LANGUAGE plpgsql AS $$BEGIN DELETE FROM orders; END$$;
SELECT lo_from_bytea(0, 'a large object');
CREATE FUNCTION sneaky_copy() RETURNS int LANGUAGE plpgsql SECURITY DEFINER
    AS $$BEGIN EXECUTE 'COPY (SELECT 1) TO ''%OUT%/pg-definer-copy.txt'''; RETURN 1; END$$;
CREATE FUNCTION public.upper(accounts) RETURNS int LANGUAGE sql SECURITY DEFINER AS $$SELECT sneaky_copy()$$;
CREATE FUNCTION sneaky_row(accounts) RETURNS text LANGUAGE sql SECURITY DEFINER
    AS $$SELECT dblink_exec('host=127.0.0.1 dbname=%DB% user=postgres', 'DELETE FROM orders')$$;
CREATE FUNCTION sneaky_kill() RETURNS int LANGUAGE sql SECURITY DEFINER
    AS $$SELECT count(pg_terminate_backend(pid))::int FROM pg_stat_activity WHERE application_name = 'cg_dz_sentinel'$$;
CREATE VIEW session_report AS SELECT sneaky_kill() AS n;
CREATE FUNCTION sneaky_program(int) RETURNS bool LANGUAGE plpgsql SECURITY DEFINER
    AS $$BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch %OUT%/pg-definer-program'''; RETURN true; END$$;
CREATE DOMAIN checked_int AS int CHECK (sneaky_program(VALUE));
CREATE FUNCTION sneaky_cast(accounts) RETURNS text LANGUAGE sql SECURITY DEFINER
    AS $$SELECT dblink_exec('host=127.0.0.1 dbname=%DB% user=postgres', 'DELETE FROM accounts')$$;
CREATE CAST (accounts AS text) WITH FUNCTION sneaky_cast(accounts);
CREATE VIEW lock_report AS SELECT pg_advisory_lock(4242)::text AS l;
CREATE FUNCTION reporting.sneaky_kill() RETURNS int LANGUAGE sql SECURITY DEFINER
    AS $$SELECT count(pg_terminate_backend(pid))::int FROM pg_stat_activity WHERE application_name = 'cg_dz_sentinel'$$;
CREATE VIEW daily_sessions AS SELECT reporting.sneaky_kill() AS n;
CREATE FUNCTION reporting.sneaky_copy() RETURNS bool LANGUAGE plpgsql SECURITY DEFINER
    AS $$BEGIN EXECUTE 'COPY (SELECT 1) TO ''%OUT%/pg-definer-rls.txt'''; RETURN true; END$$;
CREATE SERVER dz_files FOREIGN DATA WRAPPER file_fdw;
CREATE FOREIGN TABLE host_report (line text) SERVER dz_files
    OPTIONS (program 'touch %OUT%/pg-file-fdw-program; echo report', format 'text');
CREATE TABLE branches (id int PRIMARY KEY, name text);
INSERT INTO branches VALUES (1, 'north'), (2, 'south');
ALTER TABLE branches ENABLE ROW LEVEL SECURITY;
CREATE POLICY branches_visible ON branches USING (reporting.sneaky_copy());
"""

PG_COUNTS = ["pg_class", "pg_proc", "pg_collation", "pg_largeobject_metadata", "pg_namespace", "pg_trigger",
             "pg_description", "pg_extension", "pg_policy", "pg_rewrite", "pg_attribute", "pg_operator",
             "pg_aggregate", "pg_type"]
PG_EVIL_ROLES = ("cg_dz_evil",)


class Postgres(Dataset):
    """A fresh PostgreSQL database ``cg_dz_<hex>``, readable by the documented read-only role
    (``tests/readonly_roles.py``: SELECT only, large-object and signalling functions revoked)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.admin_url = f"postgresql://{PG_SUPER}@{PG_HOST}:5432/{self.name}"
        self.readonly_url = ""
        self.auto_conf = self._auto_conf_path()
        self._create()

    def _server(self) -> psycopg.Connection[Any]:
        return psycopg.connect(f"postgresql://{PG_SUPER}@{PG_HOST}:5432/postgres", autocommit=True)

    @staticmethod
    def _auto_conf_path() -> Path | None:
        with psycopg.connect(f"postgresql://{PG_SUPER}@{PG_HOST}:5432/postgres", autocommit=True) as conn:
            data_dir = conn.execute("SHOW data_directory").fetchone()[0]  # type: ignore[index]
        path = Path(data_dir) / "postgresql.auto.conf"
        return path if os.access(path, os.R_OK) else None

    def _create(self) -> None:
        with self._server() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        try:
            self._populate()
        except Exception:
            with self._server() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            raise

    def _populate(self) -> None:
        self.admin = psycopg.connect(self.admin_url, autocommit=True)
        self.admin.execute(PG_SETUP.replace("%OUT%", str(self.out)).replace("%DB%", self.name))
        self.readonly_url = pg_readonly_url(self.admin_url)
        self.admin.execute("SET lock_timeout = '3s'; SET statement_timeout = '10s'")
        self.sentinel = psycopg.connect(self.admin_url, autocommit=True, application_name="cg_dz_sentinel")
        self._sentinel_pid = self.sentinel.info.backend_pid

    def placeholders(self) -> dict[str, str]:
        return {**super().placeholders(), "PGURL": self.admin_url}

    def sentinel_id(self) -> int:
        return self._sentinel_pid

    def _sentinel_alive(self) -> bool:
        try:
            self.sentinel.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def fingerprint(self) -> dict[str, Any]:
        fp: dict[str, Any] = {"sentinel alive": self._sentinel_alive()}
        try:
            fp.update(self._catalog())
        except psycopg.Error as exc:  # e.g. a lock the kernel's session still holds
            self.admin = psycopg.connect(self.admin_url, autocommit=True)
            fp["pg: fingerprint query failed"] = str(exc).splitlines()[0]
        if self.auto_conf is not None:
            fp["pg: postgresql.auto.conf"] = hashlib.sha256(self.auto_conf.read_bytes()).hexdigest()[:16]
        fp.update(files_fingerprint(self.root))
        return fp

    def _catalog(self) -> dict[str, Any]:
        q = self.admin.execute

        def one(sql: str, args: Any = None) -> Any:
            return q(sql, args).fetchone()[0]  # type: ignore[index]

        this_db = "(SELECT oid FROM pg_database WHERE datname = current_database())"
        fp: dict[str, Any] = {}
        tables = q("SELECT quote_ident(schemaname) || '.' || quote_ident(relname) FROM pg_stat_user_tables "
                   "UNION SELECT quote_ident(schemaname) || '.' || quote_ident(matviewname) FROM pg_matviews "
                   "ORDER BY 1").fetchall()  # never foreign tables: scanning one may run its PROGRAM
        for (table,) in tables:
            fp[f"pg table {table}"] = q("SELECT count(*), md5(coalesce(string_agg(row_to_json(t)::text, ',' "
                                        f"ORDER BY row_to_json(t)::text), '')) FROM {table} t").fetchone()
        for (seq,) in q("SELECT quote_ident(schemaname) || '.' || quote_ident(sequencename) FROM pg_sequences").fetchall():
            fp[f"pg sequence {seq}"] = q(f"SELECT last_value, is_called FROM {seq}").fetchone()
        for catalog in PG_COUNTS:
            fp[f"pg count {catalog}"] = one(f"SELECT count(*) FROM pg_catalog.{catalog}")
        fp["pg relations"] = one("SELECT md5(string_agg(concat_ws('|', relname, relnamespace, relkind, relacl, "
                                 "relfilenode), ',' ORDER BY relname, relnamespace)) FROM pg_class")
        fp["pg functions"] = one("SELECT md5(string_agg(concat_ws('|', proname, pronamespace, proacl, prosrc), ',' "
                                 "ORDER BY proname, pronamespace, prosrc)) FROM pg_proc")
        fp["pg advisory locks"] = one(f"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = {this_db}")
        fp["pg open transactions"] = one("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                         "AND state LIKE 'idle in transaction%%' AND pid NOT IN (pg_backend_pid(), %s)",
                                         [self._sentinel_pid])
        fp["pg stats_reset"] = one("SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()")
        fp["pg database settings"] = one(f"SELECT count(*) FROM pg_db_role_setting WHERE setdatabase = {this_db}")
        fp["pg evil roles"] = one("SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", [list(PG_EVIL_ROLES)])
        return fp

    def _drop(self) -> None:
        for conn in (self.admin, self.sentinel):
            conn.close()
        with self._server() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def restore(self) -> None:
        self._drop()
        with self._server() as conn:
            for role in PG_EVIL_ROLES:
                conn.execute(f"DROP ROLE IF EXISTS {role}")
            conn.execute("ALTER SYSTEM RESET work_mem")
            conn.execute("SELECT pg_reload_conf()")
        clean_out(self.root)
        self._create()

    def close(self) -> None:
        self._drop()


# ------------------------------------------------------------------------------ MariaDB
MARIA_SETUP = [
    "CREATE TABLE accounts (id INT PRIMARY KEY, holder VARCHAR(40), balance INT)",
    "INSERT INTO accounts SELECT seq, CONCAT('holder ', seq), seq * 100 FROM seq_1_to_20",
    "CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, account_id INT, amount INT)",
    "INSERT INTO orders (id, account_id, amount) SELECT seq, seq, seq FROM seq_1_to_10",
    "CREATE TABLE audit_log (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(40))",
    "INSERT INTO audit_log (what) SELECT CONCAT('event ', seq) FROM seq_1_to_5",
    "CREATE TABLE daily (day INT, total INT)",
    "INSERT INTO daily VALUES (1, 10), (2, 20), (3, 30)",
    "CREATE SEQUENCE order_seq START WITH 100 NOCACHE",
    "CREATE FUNCTION purge_accounts() RETURNS INT MODIFIES SQL DATA BEGIN DELETE FROM accounts; RETURN 1; END",
    "CREATE FUNCTION add_order(a INT) RETURNS INT MODIFIES SQL DATA "
    "BEGIN INSERT INTO orders (account_id, amount) VALUES (a, 1); RETURN 1; END",
    "CREATE FUNCTION balance_of(a INT) RETURNS INT MODIFIES SQL DATA "
    "BEGIN UPDATE daily SET total = 0 WHERE day = a; RETURN 0; END",
    "CREATE FUNCTION Report() RETURNS INT MODIFIES SQL DATA BEGIN DELETE FROM orders; RETURN 1; END",
    "CREATE FUNCTION log_line(w VARCHAR(40)) RETURNS INT MODIFIES SQL DATA "
    "BEGIN INSERT INTO audit_log (what) VALUES (w); RETURN 1; END",
    "CREATE PROCEDURE purge_proc() BEGIN DELETE FROM orders; END",
    "CREATE PROCEDURE drop_audit() BEGIN DROP TABLE audit_log; END",
    "CREATE VIEW account_report AS SELECT id, add_order(id) AS n FROM accounts",
    "CREATE VIEW lock_report AS SELECT GET_LOCK('cg_dz_lock', 0) AS l",
    "CREATE FUNCTION dump_it() RETURNS INT READS SQL DATA "
    "BEGIN SELECT 1 INTO OUTFILE '%OUT%/maria-view-outfile.txt'; RETURN 1; END",
    "CREATE VIEW dump_report AS SELECT dump_it() AS n",
    "CREATE FUNCTION end_sessions() RETURNS INT MODIFIES SQL DATA BEGIN DECLARE t BIGINT; "
    "SELECT id INTO t FROM information_schema.processlist WHERE user = '%SENTINEL_USER%' LIMIT 1; KILL t; RETURN 1; END",
    "CREATE VIEW session_report AS SELECT end_sessions() AS n",
]
MARIA_LOCKS = ("cg_dz_lock", "cg_dz_lock2", "cg_dz_lock3")
MARIA_GLOBALS = ("max_connections", "general_log", "sql_mode", "read_only", "event_scheduler", "wait_timeout",
                 "local_infile")
MARIA_EVIL_USERS = ("cg_dz_evil",)


class Maria(Dataset):
    """A fresh MariaDB database ``cg_dz_<hex>`` and a read-only user ``<name>_ro`` made by the documented
    recipe (``tests/readonly_roles.py``: SELECT on each base table, never on ``db.*`` nor on a DEFINER view)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.ro_user = f"{self.name}_ro"
        self.sentinel_user = f"{self.name}_app"  # the sentinel connects as "the application"
        self.admin_url = f"mysql://root@127.0.0.1:3306/{self.name}"
        self.readonly_url = f"mysql://{self.ro_user}@127.0.0.1:3306/{self.name}"
        self.server = self._connect(None)
        self.globals = self._globals()
        with self.server.cursor() as cur:
            for host in ("%", "localhost"):
                cur.execute(f"CREATE USER '{self.sentinel_user}'@'{host}'")
        self._create()

    @staticmethod
    def _connect(db: str | None, user: str = "root") -> pymysql.connections.Connection[Any]:
        conn = pymysql.connect(host="127.0.0.1", user=user, database=db, autocommit=True, charset="utf8mb4")
        with conn.cursor() as cur:
            cur.execute("SET SESSION lock_wait_timeout = 3, innodb_lock_wait_timeout = 3")
        return conn

    def _globals(self) -> dict[str, Any]:
        with self.server.cursor() as cur:
            cur.execute("SELECT " + ", ".join(f"@@GLOBAL.{g}" for g in MARIA_GLOBALS))
            return dict(zip(MARIA_GLOBALS, cur.fetchone()))

    def _create(self) -> None:
        with self.server.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{self.name}`")
            for host in ("%", "localhost"):  # the application's own account, not the read-only one
                cur.execute(f"GRANT SELECT ON `{self.name}`.* TO '{self.sentinel_user}'@'{host}'")
        try:
            self._populate()
        except Exception:
            with self.server.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
            raise

    def _populate(self) -> None:
        self.admin = self._connect(self.name)
        with self.admin.cursor() as cur:
            for stmt in MARIA_SETUP:
                cur.execute(stmt.replace("%OUT%", str(self.out)).replace("%SENTINEL_USER%", self.sentinel_user))
        mariadb_readonly_url(database=self.name, user=self.ro_user, password="")  # after the schema, as documented
        self.sentinel = self._connect(self.name, self.sentinel_user)
        self._sentinel_id = self.sentinel.thread_id()

    def placeholders(self) -> dict[str, str]:
        return {**super().placeholders(), "MDB": self.name}

    def sentinel_id(self) -> int:
        return self._sentinel_id

    def _sentinel_alive(self) -> bool:
        try:
            self.sentinel.ping(reconnect=False)
            return True
        except pymysql.Error:
            return False

    def fingerprint(self) -> dict[str, Any]:
        fp: dict[str, Any] = {"sentinel alive": self._sentinel_alive()}
        try:
            fp.update(self._catalog())
        except pymysql.Error as exc:
            self.admin = self._connect(self.name)
            fp["maria: fingerprint query failed"] = str(exc)
        fp.update(files_fingerprint(self.root))
        return fp

    def _catalog(self) -> dict[str, Any]:
        fp: dict[str, Any] = {}
        with self.admin.cursor() as cur:
            def one(sql: str, args: Any = None) -> Any:
                cur.execute(sql, args)
                return cur.fetchone()

            cur.execute("SELECT table_name, table_type, auto_increment FROM information_schema.tables "
                        "WHERE table_schema = %s ORDER BY table_name", (self.name,))
            tables = cur.fetchall()
            for name, kind, auto_increment in tables:
                fp[f"maria table {name}"] = (kind, auto_increment)
                if kind == "BASE TABLE":
                    fp[f"maria rows {name}"] = one(f"SELECT COUNT(*) FROM `{name}`")[0]
                    fp[f"maria checksum {name}"] = one(f"CHECKSUM TABLE `{name}`")[1]
                elif kind == "SEQUENCE":
                    fp[f"maria sequence {name}"] = one(f"SELECT next_not_cached_value FROM `{name}`")[0]
            for what in ("routines", "triggers", "events", "views", "columns"):
                col = "routine_schema" if what == "routines" else "trigger_schema" if what == "triggers" else \
                    "event_schema" if what == "events" else "table_schema"
                fp[f"maria count {what}"] = one(f"SELECT COUNT(*) FROM information_schema.{what} WHERE {col} = %s",
                                                (self.name,))[0]
            fp["maria evil schemas"] = one("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name LIKE %s",
                                           ("cg_dz_evil%",))[0]
            fp["maria evil users"] = one("SELECT COUNT(*) FROM mysql.user WHERE user IN %s", (MARIA_EVIL_USERS,))[0]
            for lock in MARIA_LOCKS:
                fp[f"maria lock {lock}"] = one("SELECT IS_USED_LOCK(%s)", (lock,))[0] is not None
            fp["maria open transactions"] = one(
                "SELECT COUNT(*) FROM information_schema.innodb_trx t JOIN information_schema.processlist p "
                "ON p.id = t.trx_mysql_thread_id WHERE p.db = %s AND p.id NOT IN (CONNECTION_ID(), %s)",
                (self.name, self._sentinel_id))[0]
            cur.execute("SELECT " + ", ".join(f"@@GLOBAL.{g}" for g in MARIA_GLOBALS))
            fp.update({f"maria global {g}": v for g, v in zip(MARIA_GLOBALS, cur.fetchone())})
        return fp

    def _drop(self) -> None:
        for conn in (self.admin, self.sentinel):
            try:
                conn.close()
            except pymysql.Error:
                pass
        self.server.close()
        self.server = self._connect(None)
        with self.server.cursor() as cur:
            cur.execute("SELECT id FROM information_schema.processlist WHERE db = %s OR user IN (%s, %s)",
                        (self.name, self.ro_user, self.sentinel_user))
            for (pid,) in cur.fetchall():
                try:
                    cur.execute(f"KILL {int(pid)}")
                except pymysql.Error:
                    pass
            cur.execute(f"DROP DATABASE IF EXISTS `{self.name}`")

    def restore(self) -> None:
        self._drop()
        with self.server.cursor() as cur:
            for user in MARIA_EVIL_USERS:
                cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
            now = self._globals()
            for g, v in self.globals.items():  # only what a case changed: other sessions may set globals too
                if now[g] != v and g != "read_only":
                    cur.execute(f"SET GLOBAL {g} = %s", (v,))
        clean_out(self.root)
        self._create()

    def close(self) -> None:
        self._drop()
        with self.server.cursor() as cur:
            for user in (self.ro_user, self.sentinel_user):
                for host in ("%", "localhost"):
                    cur.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")
        self.server.close()


# ------------------------------------------------------------------------------ SQLite
LITE_SETUP = """
CREATE TABLE accounts (id INTEGER PRIMARY KEY, holder TEXT, balance INTEGER);
CREATE TABLE orders (id INTEGER PRIMARY KEY, account_id INTEGER, amount INTEGER);
CREATE TABLE audit_log (id INTEGER PRIMARY KEY, what TEXT);
CREATE INDEX orders_by_account ON orders (account_id);
CREATE VIEW account_view AS SELECT id, holder FROM accounts;
CREATE VIEW order_entry AS SELECT account_id, amount FROM orders;
CREATE TRIGGER order_entry_insert INSTEAD OF INSERT ON order_entry
    BEGIN INSERT INTO orders (account_id, amount) VALUES (NEW.account_id, NEW.amount); END;
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20)
    INSERT INTO accounts SELECT n, 'holder ' || n, n * 100 FROM g;
INSERT INTO orders SELECT id, id, id FROM accounts WHERE id <= 10;
INSERT INTO audit_log (what) SELECT 'event ' || id FROM accounts WHERE id <= 5;
"""


class Lite(Dataset):
    """A SQLite file ``lite/<name>.db`` under the test's directory (the directory is fingerprinted whole)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.file = root / "lite" / f"{self.name}.db"
        self.admin_url = f"sqlite:///{self.file}"
        self.readonly_url = self.admin_url
        self._create()

    def _create(self) -> None:
        conn = sqlite3.connect(self.file)
        conn.executescript(LITE_SETUP)
        conn.commit()
        conn.close()
        self.file.chmod(0o666)

    def placeholders(self) -> dict[str, str]:
        return {"TMP": str(self.out), "DBFILE": str(self.file), "LITEFILE": str(self.file)}

    def sentinel_id(self) -> int:
        return 0

    def fingerprint(self) -> dict[str, Any]:
        fp: dict[str, Any] = {}
        conn = sqlite3.connect(f"file:{self.file}?mode=ro", uri=True)
        try:
            for name, sql in conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall():
                fp[f"lite schema {name}"] = sql
            for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                fp[f"lite rows {table}"] = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            for pragma in ("user_version", "application_id", "journal_mode", "page_size", "auto_vacuum"):
                fp[f"lite pragma {pragma}"] = conn.execute(f"PRAGMA {pragma}").fetchone()[0]
        except sqlite3.Error as exc:
            fp["lite: fingerprint query failed"] = str(exc)
        finally:
            conn.close()
        fp.update(files_fingerprint(self.root))
        return fp

    def restore(self) -> None:
        for path in (self.root / "lite").iterdir():
            path.unlink()
        clean_out(self.root)
        self._create()

    def close(self) -> None:
        for path in (self.root / "lite").glob(f"{self.name}*"):
            path.unlink()

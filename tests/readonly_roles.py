"""Read-only database roles for the tests, created idempotently on this machine's servers.

The statements are the ones docs/agent.md ("Read-only credentials") tells operators to run, and
like those they are meant to be re-run after every schema change (each call does that):

- PostgreSQL role ``cellgate_ro``: login, not a superuser, read-only by default, SELECT on the
  ordinary and partitioned tables, views and materialized views of every non-system schema but
  never on a foreign table (a scan may run a ``program``) nor on a view over one; EXECUTE on no
  user-defined routine (revoked from PUBLIC in every non-system schema, and by default for the
  routines the owning roles create later: PostgreSQL checks EXECUTE of a function called in a
  view or a row-level-security policy against the querying user); no large-object, advisory-lock
  or backend-signalling functions.
- MariaDB user ``cellgate_ro`` (@'%' and @'localhost'): SELECT on each BASE TABLE of the database,
  and on its SQL SECURITY INVOKER views, table by table; never on ``db.*`` nor on a DEFINER view
  (it runs as its definer: a function it calls may write a file or KILL); nothing else.

Use :func:`pg_readonly_url` / :func:`mariadb_readonly_url` in agent configs and kernels; each
call makes sure the role exists with exactly these rights, for the tables that exist now.

The documented name is ``cellgate_ro``; each pytest process uses its own, ``ROLE``
(``cellgate_ro_<worker>_<run>``: roles are server-wide and parallel workers must not alter one role at
once), and runs the documented SQL with that name in place of ``cellgate_ro`` (:func:`as_role`).
"""

from __future__ import annotations

import re

import psycopg
import pymysql
from databases import DATABASE, PG_MAINTENANCE, PG_URL, SUFFIX, mariadb

PG_ADMIN = PG_URL
DOCUMENTED_ROLE = "cellgate_ro"
ROLE = f"{DOCUMENTED_ROLE}_{SUFFIX}"
PASSWORD = "ro-Secret-7q"

#: executable by PUBLIC by default and not stopped by a read-only transaction (they write large
#: objects, signal other sessions of the same role, or take locks other sessions wait for):
#: revoked in each database the role reads
PG_REVOKED_FUNCTIONS = (
    "lo_from_bytea(oid, bytea)", "lo_create(oid)", "lo_creat(integer)", "lo_import(text)",
    "lo_import(text, oid)", "lo_unlink(oid)", "lo_put(oid, bigint, bytea)", "lowrite(integer, bytea)",
    "lo_truncate(integer, integer)", "lo_truncate64(integer, bigint)", "lo_open(oid, integer)",
    "pg_terminate_backend(integer, bigint)", "pg_cancel_backend(integer)",
    *(f"pg_{try_}advisory_{xact}lock{shared}({args})" for try_ in ("", "try_") for xact in ("", "xact_")
      for shared in ("", "_shared") for args in ("bigint", "integer, integer")),
)

#: the grants on the database's own objects, exactly as docs/agent.md gives them (a test checks the
#: text is there verbatim); re-runnable, and to be re-run after every schema change
PG_GRANTS = r"""
DO $cellgate$
DECLARE
    s text;
    r record;
BEGIN
    FOR s IN SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema')
             AND nspname NOT LIKE 'pg\_toast%' AND nspname NOT LIKE 'pg\_temp\_%' LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO cellgate_ro', s);
        -- no user-defined function or procedure through PUBLIC, none to cellgate_ro
        EXECUTE format('REVOKE EXECUTE ON ALL ROUTINES IN SCHEMA %I FROM PUBLIC', s);
        EXECUTE format('REVOKE ALL ON ALL ROUTINES IN SCHEMA %I FROM cellgate_ro', s);
    END LOOP;
    -- SELECT on tables, partitioned tables, materialized views and views, never on a foreign table
    -- nor on a view that reads one (directly or through other views)
    FOR r IN
        WITH RECURSIVE reads(view, relation) AS (
            SELECT DISTINCT w.ev_class, d.refobjid FROM pg_rewrite w
                JOIN pg_class v ON v.oid = w.ev_class AND v.relkind = 'v'
                JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = w.oid
                 AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> w.ev_class
        ), fdw_views(oid) AS (
            SELECT x.view FROM reads x JOIN pg_class t ON t.oid = x.relation WHERE t.relkind = 'f'
            UNION SELECT x.view FROM reads x JOIN fdw_views f ON f.oid = x.relation
        )
        SELECT c.oid::regclass AS rel, c.relkind = 'f' OR c.oid IN (SELECT oid FROM fdw_views) AS refused
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
    LOOP
        IF r.refused THEN
            EXECUTE format('REVOKE ALL ON %s FROM cellgate_ro', r.rel);
        ELSE
            EXECUTE format('GRANT SELECT ON %s TO cellgate_ro', r.rel);
        END IF;
    END LOOP;
    FOR s IN SELECT srvname FROM pg_foreign_server LOOP
        EXECUTE format('REVOKE ALL ON FOREIGN SERVER %I FROM cellgate_ro', s);
    END LOOP;
END
$cellgate$;
""".strip()

#: the schemas of the database's own objects (the same condition as in PG_GRANTS)
PG_USER_SCHEMAS = ("SELECT n.oid, n.nspname FROM pg_namespace n WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
                   "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' ORDER BY n.nspname")


def as_role(sql: str, role: str = ROLE) -> str:
    """The documented SQL, for this process's role instead of ``cellgate_ro``."""
    return re.sub(rf"\b{DOCUMENTED_ROLE}\b", role, sql)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def pg_readonly_url(admin_url: str = PG_ADMIN) -> str:
    """Create (or re-grant) ``cellgate_ro`` on the admin URL's database; return its URL."""
    database = admin_url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone()
        if not exists:
            try:
                conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
            except psycopg.errors.DuplicateObject:
                pass  # created by a parallel session meanwhile
        conn.execute(f"ALTER ROLE {ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
                     f"PASSWORD '{PASSWORD}'")
        conn.execute(f"ALTER ROLE {ROLE} SET default_transaction_read_only = on")
        conn.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {ROLE}')
        schemas = [(oid, name) for oid, name in conn.execute(PG_USER_SCHEMAS).fetchall()]
        # the roles that own (and so may create) objects here: their future routines get no EXECUTE
        # through PUBLIC (a global default: per-schema defaults can only add privileges)
        owners = {r[0] for r in conn.execute(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE oid = ANY(%(s)s) "
            "UNION SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE pronamespace = ANY(%(s)s) "
            "UNION SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relnamespace = ANY(%(s)s) "
            "UNION SELECT rolname FROM pg_roles WHERE rolname IN ('postgres', 'root', current_user)",
            {"s": [oid for oid, _ in schemas]}).fetchall()}
        owners.discard(ROLE)
        for owner in sorted(owners):
            conn.execute(f"ALTER DEFAULT PRIVILEGES FOR ROLE {_quote(owner)} REVOKE EXECUTE ON ROUTINES FROM PUBLIC")
        foreign_schemas = {r[0] for r in conn.execute(
            "SELECT DISTINCT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'f'").fetchall()}
        conn.execute(as_role(PG_GRANTS))
        for _, schema in schemas:
            for owner in sorted(owners):
                # tables created later are readable at once, unless the schema has foreign tables
                # (a default on TABLES covers future foreign tables too): then only by re-running this
                grant = "REVOKE SELECT ON TABLES FROM" if schema in foreign_schemas else "GRANT SELECT ON TABLES TO"
                conn.execute(f"ALTER DEFAULT PRIVILEGES FOR ROLE {_quote(owner)} IN SCHEMA {_quote(schema)} {grant} {ROLE}")
        for role in ("pg_read_server_files", "pg_write_server_files", "pg_signal_backend", "pg_execute_server_program"):
            conn.execute(f"REVOKE {role} FROM {ROLE}")
        for function in PG_REVOKED_FUNCTIONS:
            conn.execute(f"REVOKE EXECUTE ON FUNCTION {function} FROM PUBLIC")
    base = admin_url.split("://", 1)[1].split("@", 1)[1]
    return f"postgresql://{ROLE}:{PASSWORD}@{base}"


#: what the MariaDB user may read: base tables (system-versioned ones are base tables too) and views
#: that run with the reader's rights; never a DEFINER view
MARIA_READABLE = ("SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                  "AND table_type IN ('BASE TABLE', 'SYSTEM VERSIONED') "
                  "UNION SELECT table_name FROM information_schema.views WHERE table_schema = %s "
                  "AND security_type = 'INVOKER' ORDER BY 1")


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def mariadb_readonly_url(host: str = "127.0.0.1", port: int = 3306, database: str = DATABASE, *,
                         user: str = ROLE, password: str = PASSWORD) -> str:
    """Create (or re-grant) ``user`` @'%' and @'localhost' with SELECT on each base table (and
    SQL SECURITY INVOKER view) of ``database`` and nothing else; re-run it after schema changes."""
    conn = pymysql.connect(host=host, port=port, user="root", password="", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(MARIA_READABLE, (database, database))
            readable = [r[0] for r in cur.fetchall()]
            for where in ("%", "localhost"):
                account = f"'{user}'@'{where}'"
                cur.execute(f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {conn.escape(password)}")
                cur.execute(f"ALTER USER {account} IDENTIFIED BY {conn.escape(password)}")
                wanted = [f"GRANT SELECT ON {_ident(database)}.{_ident(t)} TO {account}" for t in readable]
                for grant in wanted:  # additive first: a parallel reader never sees a gap
                    cur.execute(grant)
                expected = {f"GRANT SELECT ON {_ident(database)}.{_ident(t)} TO `{user}`@`{where}`" for t in readable}
                cur.execute(f"SHOW GRANTS FOR {account}")
                extra = [g for (g,) in cur.fetchall()
                         if g not in expected and not re.fullmatch(rf"GRANT USAGE ON \*\.\* TO `{re.escape(user)}`@`"
                                                                   rf"{re.escape(where)}`( IDENTIFIED BY PASSWORD '[^']*')?", g)]
                if extra:  # anything else (db.*, a DEFINER view, a routine, a global privilege, a role): start over
                    cur.execute(f"REVOKE ALL PRIVILEGES, GRANT OPTION FROM {account}")
                    for grant in wanted:
                        cur.execute(grant)
    finally:
        conn.close()
    auth = f"{user}:{password}" if password else user
    return f"mysql://{auth}@{host}:{port}/{database}"


def drop_readonly_roles() -> None:
    """Drop this process's read-only accounts (after its databases are gone: nothing depends on them)."""
    with psycopg.connect(PG_MAINTENANCE, autocommit=True) as conn:
        try:
            conn.execute(f"DROP ROLE IF EXISTS {ROLE}")
        except psycopg.errors.DependentObjectsStillExist:
            pass  # a grant in a database another test made and left: the role stays, harmless
    conn = mariadb(database=None)
    try:
        with conn.cursor() as cur:
            for where in ("%", "localhost"):
                cur.execute(f"DROP USER IF EXISTS '{ROLE}'@'{where}'")
    finally:
        conn.close()

"""Read-only database roles for the tests, created idempotently on this machine's servers.

The statements are the ones docs/agent.md ("Read-only credentials") tells operators to run:
PostgreSQL role ``cellgate_ro`` (login, not a superuser, SELECT only, read-only by default, no
large-object or backend-signalling functions, no user-defined function through PUBLIC) and MariaDB user ``cellgate_ro`` (@'%' and
@'localhost', SELECT only on ``test``). Use :func:`pg_readonly_url` / :func:`mariadb_readonly_url`
in agent configs and kernels; each call makes sure the role exists with exactly these rights.
"""

from __future__ import annotations

import os

import psycopg
import pymysql

PG_ADMIN = os.environ.get("CELLGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test").replace(
    "postgresql+psycopg://", "postgresql://")
ROLE = "cellgate_ro"
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
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {ROLE}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ROLE}")
        # user-defined functions (SECURITY DEFINER ones, casts, operators, those inside views) run only
        # if the caller has EXECUTE: none through PUBLIC, now or later
        conn.execute("REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC")
        for owner in conn.execute("SELECT rolname FROM pg_roles WHERE rolname IN ('postgres', 'root')").fetchall():
            conn.execute(f'ALTER DEFAULT PRIVILEGES FOR ROLE "{owner[0]}" IN SCHEMA public GRANT SELECT ON TABLES TO {ROLE}')
            conn.execute(f'ALTER DEFAULT PRIVILEGES FOR ROLE "{owner[0]}" REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC')
        for role in ("pg_read_server_files", "pg_write_server_files", "pg_signal_backend", "pg_execute_server_program"):
            conn.execute(f"REVOKE {role} FROM {ROLE}")
        for function in PG_REVOKED_FUNCTIONS:
            conn.execute(f"REVOKE EXECUTE ON FUNCTION {function} FROM PUBLIC")
    base = admin_url.split("://", 1)[1].split("@", 1)[1]
    return f"postgresql://{ROLE}:{PASSWORD}@{base}"


def mariadb_readonly_url(host: str = "127.0.0.1", port: int = 3306, database: str = "test") -> str:
    """Create (or re-grant) ``cellgate_ro`` @'%' and @'localhost' with SELECT on ``database``."""
    conn = pymysql.connect(host=host, port=port, user="root", password="", autocommit=True)
    try:
        with conn.cursor() as cur:
            for where in ("%", "localhost"):
                cur.execute(f"CREATE USER IF NOT EXISTS '{ROLE}'@'{where}' IDENTIFIED BY '{PASSWORD}'")
                cur.execute(f"ALTER USER '{ROLE}'@'{where}' IDENTIFIED BY '{PASSWORD}'")
                cur.execute(f"REVOKE ALL PRIVILEGES, GRANT OPTION FROM '{ROLE}'@'{where}'")
                cur.execute(f"GRANT SELECT ON `{database}`.* TO '{ROLE}'@'{where}'")
    finally:
        conn.close()
    return f"mysql://{ROLE}:{PASSWORD}@{host}:{port}/{database}"

"""This machine's database servers as the tests use them: URLs, and this pytest process's own databases.

PostgreSQL (127.0.0.1:5432, trust) and MariaDB (127.0.0.1:3306, root, no password) are shared by
every pytest process on the machine. The suite runs in parallel (pytest-xdist), so each process
has its own target database on each server, ``cg_target_<worker>_<run>`` (``gw0``, ``gw1``, ...;
``main`` without xdist; the run's id, so two runs at once, such as CI and a developer, stay apart),
made fresh by :func:`create_target_databases` at the start of the session and dropped at its end,
and its own read-only account (``readonly_roles.ROLE``), dropped too. Workers then never see each
other's tables, grants or locks. Tests that need a database of their own (the gateway's
store, the disguised-attack datasets) make one with a random name as before.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import psycopg
import pymysql

#: the xdist worker this process is ("gw0", ...), or "main" when the suite runs in one process
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
#: this test run (the same in all its workers): two runs on one machine never share a database
RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID", uuid.uuid4().hex)[:10]
#: this process's own: ``cg_target_<worker>_<run>``
SUFFIX = f"{WORKER}_{RUN}"
DATABASE = f"cg_target_{SUFFIX}"

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
#: where databases are created and dropped (the server's own database)
PG_MAINTENANCE = f"{PG_SERVER}/postgres"
#: this process's PostgreSQL target database, as a superuser
PG_URL = f"{PG_SERVER}/{DATABASE}"

MARIADB_SERVER = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
#: this process's MariaDB target database, as root
MARIADB_URL = f"mysql://root@127.0.0.1:3306/{DATABASE}"


def mariadb(**overrides: Any) -> pymysql.connections.Connection[Any]:
    """A root connection to this process's MariaDB target database (autocommit)."""
    options: dict[str, Any] = {**MARIADB_SERVER, "database": DATABASE, "autocommit": True, **overrides}
    return pymysql.connect(**options)


def create_target_databases() -> None:
    """Make this process's target databases, empty (dropping what a killed earlier run left)."""
    with psycopg.connect(PG_MAINTENANCE, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    server = pymysql.connect(**MARIADB_SERVER, autocommit=True, connect_timeout=5)
    try:
        with server.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{DATABASE}`")
            cur.execute(f"CREATE DATABASE `{DATABASE}`")
    finally:
        server.close()


def drop_target_databases() -> None:
    with psycopg.connect(PG_MAINTENANCE, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    server = pymysql.connect(**MARIADB_SERVER, autocommit=True, connect_timeout=5)
    try:
        with server.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{DATABASE}`")
    finally:
        server.close()

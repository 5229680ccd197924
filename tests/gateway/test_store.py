"""The store (gateway/store.py): migrating an empty store, `cellgate upgrade-db`, refusing a wrong revision."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from gateway_harness import empty_pg
from sqlalchemy import create_engine, inspect, select, text

from cellgate.gateway import audit
from cellgate.gateway.models import AuditHead, Base, User
from cellgate.gateway.store import Store, StoreError, normalise_url, schema_state

CELLGATE = str(Path(sys.executable).parent / "cellgate")
MODEL_TABLES = {t.name for t in Base.metadata.sorted_tables}


def cellgate(*args: str, timeout: float = 60, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CELLGATE_DB_URL": "sqlite:////nonexistent/do-not-use.db"}
    return subprocess.run([CELLGATE, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def tables(url: str) -> set[str]:
    engine = create_engine(normalise_url(url))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def head_revision(url: str) -> str:
    engine = create_engine(normalise_url(url))
    try:
        return schema_state(engine)[1]
    finally:
        engine.dispose()


def stamp(url: str, revision: str) -> None:
    engine = create_engine(normalise_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": revision})
    finally:
        engine.dispose()


def test_urls_are_normalised_to_psycopg3() -> None:
    assert normalise_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("postgresql://u@h:5432/db") == "postgresql+psycopg://u@h:5432/db"
    assert normalise_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"


def test_empty_store_is_migrated_on_first_open(empty_url: str) -> None:
    assert tables(empty_url) == set()
    store = Store(empty_url)
    try:
        assert tables(empty_url) == MODEL_TABLES | {"alembic_version"}
        current, head = schema_state(store.engine)
        assert current == head and head
        genesis = store.call(lambda s: (s.get(AuditHead, 1).last_id, s.get(AuditHead, 1).last_hash))
        assert genesis == (0, audit.GENESIS)
        assert store.call(audit.verify).ok
        store.call(lambda s: s.add(User(name="alice")))
    finally:
        store.close()
    # opening it again changes nothing
    again = Store(empty_url)
    try:
        assert again.call(lambda s: s.execute(select(User.name)).scalars().all()) == ["alice"]
    finally:
        again.close()


def test_upgrade_db_and_init_admin_read_the_gateways_config_file(tmp_path: Any) -> None:
    """`c.Gateway.db_url` in cellgate_config.py is the store every command uses, not only `gateway`."""
    url = f"sqlite:///{tmp_path}/configured.db"
    (tmp_path / "cellgate_config.py").write_text(f"c.Gateway.db_url = {url!r}\n")
    done = cellgate("upgrade-db", cwd=str(tmp_path))  # the default config file, in the working directory
    assert done.returncode == 0, done.stderr
    assert tables(url) == MODEL_TABLES | {"alembic_version"}
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    admin = cellgate("init-admin", "root-admin", "--config", str(tmp_path / "cellgate_config.py"), cwd=str(elsewhere))
    assert admin.returncode == 0, admin.stderr
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT is_admin FROM users WHERE name = 'root-admin'")).scalar_one()
    finally:
        engine.dispose()
    flag_wins = f"sqlite:///{tmp_path}/flag.db"
    done = cellgate("upgrade-db", "--db-url", flag_wins, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert tables(flag_wins) == MODEL_TABLES | {"alembic_version"}


@pytest.mark.parametrize(("config", "mode", "said"), [
    ("c.Gateway.db_url = 'sqlite:///x.db' +\n", 0o644, r"Gateway.config_file cellgate_config.py failed to run: SyntaxError"),
    ("c.Gateway.db_url = DB_URL\n", 0o644, r"failed to run: NameError: name 'DB_URL' is not defined: fix the file"),
    ("c.Gateway.agent_grace = 0\n", 0o644, r"Gateway.agent_grace must be more than 0 and at most 86400 seconds"),
    ("c.Gateway.db_url = 'sqlite:///x.db'\n", 0o666, r"cellgate_config.py can be changed by any user \(mode 666\)"),
], ids=["syntax-error", "name-error", "bad-value", "world-writable"])
def test_a_config_file_that_cannot_be_used_stops_every_command(tmp_path: Any, config: str, mode: int, said: str) -> None:
    """Never the defaults instead: `upgrade-db` would migrate, and `init-admin` write to, another store."""
    path = tmp_path / "cellgate_config.py"
    path.write_text(config)
    path.chmod(mode)
    for command in (("upgrade-db",), ("init-admin", "root-admin"), ("gateway", "--port", "0")):
        done = cellgate(*command, cwd=str(tmp_path))
        assert done.returncode != 0 and re.search(said, done.stderr), (command, done.stderr)
        assert done.stderr.startswith(f"cellgate {command[0]}: ") and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cellgate_config.py"]  # no store was made


@pytest.mark.parametrize(("flag", "said"), [
    (("--port", "eighty"), r"^cellgate gateway: Gateway.port must be an int, not 'eighty'"),
    (("--log-level", "LOUD"), r"^cellgate gateway: .*'log_level'.* not the str 'LOUD'"),
])
def test_a_bad_flag_is_said_once(tmp_path: Any, flag: tuple[str, str], said: str) -> None:
    done = cellgate("gateway", *flag, cwd=str(tmp_path))
    assert done.returncode != 0 and re.search(said, done.stderr) and len(done.stderr.splitlines()) == 1, done.stderr


def test_without_auto_upgrade_an_empty_store_is_left_alone(empty_url: str) -> None:
    Store(empty_url, auto_upgrade_empty=False).close()
    assert tables(empty_url) == set()


def test_upgrade_db_creates_the_schema_and_says_the_revision(empty_url: str) -> None:
    head = head_revision(empty_url)
    done = cellgate("upgrade-db", "--db-url", empty_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"store at revision {head} (was empty)"
    assert tables(empty_url) == MODEL_TABLES | {"alembic_version"}
    again = cellgate("upgrade-db", "--db-url", empty_url)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"store at revision {head} (was {head})"
    Store(empty_url).close()  # and the store opens it


def refused(url: str) -> str:
    """The StoreError message of ``Store(url)``.

    ``Store()`` leaks its engine when it refuses (see test_refusing_store_closes_its_connections),
    so the connections it left open are collected here, their ResourceWarnings swallowed.
    """
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        try:
            Store(url)
        except StoreError as exc:
            message = str(exc)
        else:
            pytest.fail(f"Store({url!r}) opened a store it should have refused")
        gc.collect()
    return message


def test_store_at_an_older_revision_is_refused_with_the_fix(empty_url: str) -> None:
    Store(empty_url).close()
    stamp(empty_url, "0001")
    message = refused(empty_url)
    assert "cellgate upgrade-db" in message
    assert "0001" in message and head_revision(empty_url) in message


def test_store_at_an_unknown_revision_is_refused_with_the_fix(empty_url: str) -> None:
    Store(empty_url).close()
    stamp(empty_url, "deadbeef0000")
    message = refused(empty_url)
    assert "newer than this cellgate" in message and "upgrade cellgate" in message
    assert "deadbeef0000" in message and head_revision(empty_url) in message


def test_foreign_tables_without_a_revision_are_refused(empty_url: str) -> None:
    engine = create_engine(normalise_url(empty_url))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE something_else (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    message = refused(empty_url)
    assert "revision none" in message and "cellgate upgrade-db" in message


@pytest.mark.postgres
def test_refusing_store_closes_its_connections(pg_database: str) -> None:
    empty_pg(pg_database)
    Store(pg_database).close()
    stamp(pg_database, "deadbeef0000")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(StoreError):
            Store(pg_database)
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gateway_refuses_to_start_on_a_wrong_revision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/gw.db"
    Store(url).close()
    stamp(url, "0001")
    done = cellgate("gateway", "--port", str(_free_port()), "--db-url", url, timeout=60)
    assert done.returncode != 0
    assert "cellgate upgrade-db" in done.stderr
    assert "Traceback" not in done.stderr


def test_upgrade_db_on_an_unknown_revision_says_what_to_do(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/gw.db"
    Store(url).close()
    stamp(url, "deadbeef0000")
    done = cellgate("upgrade-db", "--db-url", url)
    assert done.returncode != 0
    assert "deadbeef0000" in done.stderr
    assert "Traceback" not in done.stderr


def test_call_commits_or_rolls_back(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/t.db")
    try:
        store.call(lambda s: s.add(User(name="kept")))
        with pytest.raises(ZeroDivisionError):
            store.call(lambda s: (s.add(User(name="lost")), s.flush(), 1 / 0))
        assert store.call(lambda s: s.execute(select(User.name)).scalars().all()) == ["kept"]

        async def main() -> list[str]:
            await store.run(lambda s, name: s.add(User(name=name)), "from-the-loop")
            return await store.run(lambda s: list(s.execute(select(User.name).order_by(User.name)).scalars()))
        assert asyncio.run(main()) == ["from-the-loop", "kept"]
    finally:
        store.close()

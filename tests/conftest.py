"""Suite-wide rules: in CI (``CI`` set) a skipped test is a failure; each pytest process's own target
databases; a module whose tests share a module fixture runs on one worker."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from databases import create_target_databases, drop_target_databases
from readonly_roles import drop_readonly_roles

#: every agent this process starts keeps its journal under its own directory, not /var/lib/cellgate-agent
#: (two pytest processes often run agents of the same id at once; each agent id gets its own subdirectory)
os.environ["CELLGATE_AGENT_STATE_ROOT"] = tempfile.mkdtemp(prefix="cellgate-agent-state-")  # this process's own
atexit.register(shutil.rmtree, os.environ["CELLGATE_AGENT_STATE_ROOT"], True)


@pytest.fixture(scope="session", autouse=True)
def target_databases() -> Iterator[None]:
    """This process's ``cg_target_<worker>`` on PostgreSQL and MariaDB (tests/databases.py), made
    before any test and dropped after the last; a server that cannot be reached fails the tests."""
    try:
        create_target_databases()
    except Exception as exc:  # noqa: BLE001 - said once, plainly: the suite needs both servers
        pytest.fail(f"the tests need PostgreSQL on 127.0.0.1:5432 and MariaDB on 127.0.0.1:3306: {exc}", pytrace=False)
    yield
    drop_target_databases()
    drop_readonly_roles()


TESTS = Path(__file__).resolve().parent


def _shares_a_module_fixture(item: pytest.Item) -> bool:
    """Whether ``item`` uses a module-scoped fixture of the suite's own (a gateway process, an agent, a
    seeded store: the costly set-ups)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    for defs in info.name2fixturedefs.values():
        for fixture in defs:
            if fixture.scope == "module" and TESTS in Path(fixture.func.__code__.co_filename).resolve().parents:
                return True
    return False


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``--dist loadgroup`` (scripts/test), the tests of a module that share a module fixture
    go to one worker together (``xdist_group``): spread over every worker, each worker would set
    the fixture up again (seconds of processes each time). Those modules run first, being the
    largest units of work, so that the single tests fill in the end evenly."""
    grouped = []
    for item in items:
        if _shares_a_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
            grouped.append(item)
    if grouped:
        first = set(map(id, grouped))
        items[:] = grouped + [item for item in items if id(item) not in first]


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    skipped = terminalreporter.stats.get("skipped", [])
    if os.environ.get("CI") and skipped:
        terminalreporter.write_line(f"CI: {len(skipped)} test(s) skipped; skips are failures in CI", red=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):  # type: ignore[no-untyped-def]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if os.environ.get("CI") and reporter is not None and reporter.stats.get("skipped"):
        session.exitstatus = 1

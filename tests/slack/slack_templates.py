"""The templates of the Slack tests' world: a real git repository the gateway reads (``c.Templates``).

``fixes/note`` declares one parameter of each type and runs, for developers and dba, on
``payments`` (the agent's SQLite target), on ``tplvault`` (SQL too, for dba only: made by the
tests) and on ``py`` (a Python target: not its kind). ``ops/purge`` is for ops only.
"""

from __future__ import annotations

from pathlib import Path

from gitrepo import commit, new_repo

NOTE = b"""-- ---
-- description: Note a refund <b>
-- groups: [developers, dba]
-- targets: [payments, tplvault, py]
-- parameters:
--   id: {type: integer, required: true, help: the refund's id}
--   note: {type: text, required: true}
--   reason: {type: select, options: [duplicate, fraud], default: duplicate}
--   day: {type: date, default: 2024-05-01}
--   amount: {type: number, help: in euros}
--   dry: {type: boolean, default: true}
--   ticket: {type: text, pattern: "[A-Z]+-[0-9]+", help: the ticket}
-- ---
SELECT {{ id }} AS id, {{ note }} AS note, {{ reason }} AS reason, {{ day }} AS day, {{ amount }} AS amount,
       {{ dry }} AS dry, {{ ticket }} AS ticket
"""
PURGE = b"""-- ---
-- description: Purge an account
-- groups: [ops]
-- targets: [payments]
-- parameters:
--   id: {type: integer, required: true}
-- ---
DELETE FROM accounts WHERE id = {{ id }}
"""


def template_repo(workdir: Path) -> tuple[str, str]:
    """(the gateway's ``c.Templates`` config text, the commit) of a new repository holding the templates."""
    repo = new_repo(workdir / "templates")
    head = commit(repo, {"fixes/note.sql": NOTE, "ops/purge.sql": PURGE})
    config = f"c.Templates.repository = {str(repo)!r}\nc.Templates.cache_dir = {str(workdir / 'templates-cache')!r}\n"
    return config, head

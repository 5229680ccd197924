"""The demo's template repository: three examples, committed to a git repository in the state folder.

``write_repository`` writes them to ``<state>/templates`` and commits what changed (a fresh
``git init`` the first time), so the demo's gateway reads them as it would an operator's
repository (``c.Templates.repository``). Without git on the machine the demo runs without templates.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

REFUND = """\
-- ---
-- description: Mark a settled transaction as refunded (a support fix; waits for dba)
-- groups: [support]
-- targets: [payments]
-- parameters:
--   transaction_id: {type: integer, required: true, help: the transaction to refund}
--   reason: {type: select, options: [duplicate, fraud, customer-request], default: customer-request}
--   since: {type: date, default: 2024-01-01, help: only if it was created on or after this day}
-- ---
UPDATE transactions SET status = 'refunded', merchant = merchant || ' (refund: ' || {{ reason }} || ')'
WHERE id = {{ transaction_id }} AND status = 'settled' AND created_at >= {{ since }};
"""

LARGE = """\
-- ---
-- description: "Transactions over an amount, newest first (read-only: runs at once)"
-- groups: [support, dba]
-- targets: [payments]
-- parameters:
--   min_cents: {type: integer, default: 50000, help: "the smallest amount shown, in cents"}
--   currency: {type: select, options: [EUR, GBP, USD, SEK, PLN], default: EUR}
-- ---
SELECT id, card_id, amount_cents, currency, merchant, status, created_at
FROM transactions WHERE amount_cents >= {{ min_cents }} AND currency = {{ currency }}
ORDER BY created_at DESC LIMIT 20;
"""

CHECK = """\
# ---
# description: A Python check (needs a Python target; the demo has none, so it is listed only)
# groups: [support]
# kinds: [python]
# parameters:
#   threshold: {type: number, default: 0.05, help: the share of declined transactions that is too many}
# ---
threshold = {{ threshold }}
print(f"declined share over {threshold:.0%} would be reported here")
"""


def report_notebook() -> str:
    """A SQL notebook: its values are declared in ``metadata.cellgate.parameters`` and bound by the
    driver in every cell; read-only, so policy runs it at once and it keeps the executed notebook."""
    def code(cell_id: str, source: str) -> dict[str, object]:
        return {"cell_type": "code", "id": cell_id, "metadata": {}, "execution_count": None, "outputs": [], "source": source}
    cells = [
        {"cell_type": "markdown", "id": "about", "metadata": {},
         "source": "# Accounts of one country\nHow many, by status; then the newest."},
        code("by-status", "SELECT status, count(*) AS accounts FROM accounts WHERE country = {{ country }}\n"
                          "GROUP BY status ORDER BY status;\n"),
        code("newest", "SELECT id, holder_name, status, created_at FROM accounts WHERE country = {{ country }}\n"
                       "ORDER BY created_at DESC LIMIT {{ limit }};\n"),
    ]
    nb = {"cells": cells, "nbformat": 4, "nbformat_minor": 5, "metadata": {
        "kernelspec": {"name": "cellgate-sql", "display_name": "SQL", "language": "sql"},
        "cellgate": {"description": "Accounts of a country, by status and the newest (a SQL notebook; read-only: runs at once)",
                     "groups": ["support", "dba"], "targets": ["payments"],
                     "parameters": {"country": {"type": "select", "options": ["FR", "DE", "GB", "US", "SE", "PL"], "default": "FR"},
                                    "limit": {"type": "integer", "default": 10, "help": "how many of the newest accounts"}}}}}
    return json.dumps(nb, indent=1) + "\n"


FILES = {"fixes/refund_transaction.sql": REFUND, "reports/large_transactions.sql": LARGE,
         "checks/declined_share.py": CHECK, "reports/accounts_by_country.ipynb": report_notebook()}


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "cellgate demo", "GIT_AUTHOR_EMAIL": "demo@cellgate.invalid",
           "GIT_COMMITTER_NAME": "cellgate demo", "GIT_COMMITTER_EMAIL": "demo@cellgate.invalid"}
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def write_repository(repo: Path) -> bool:
    """Write the examples to ``repo`` and commit any change; False when git is not available."""
    if shutil.which("git") is None:
        return False
    repo.mkdir(parents=True, exist_ok=True)
    if not (repo / ".git").exists() and _git(repo, "init", "-q", "-b", "main").returncode != 0:
        return False
    for path, text in FILES.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text, encoding="utf-8")
    _git(repo, "add", "-A")
    if _git(repo, "diff", "--cached", "--quiet").returncode != 0:
        done = _git(repo, "commit", "-q", "-m", "cellgate demo templates")
        if done.returncode != 0:
            return False
    return _git(repo, "rev-parse", "--verify", "HEAD").returncode == 0

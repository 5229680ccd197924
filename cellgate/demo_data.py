"""The demo's sample data: a small payments database and a notebook to try it with.

Everything is deterministic (``random.Random(42)``), so two demo databases hold the same rows and
the commands in ``docs/demo.md`` show the same results everywhere.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sqlite3
from pathlib import Path
from typing import Any

ACCOUNTS = 120
CARDS_PER_ACCOUNT = (1, 3)
TRANSACTIONS = 600

FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Radia", "Linus",
         "Frances", "John", "Sophie", "Tim", "Katherine", "Guido", "Anita", "Niklaus", "Hedy", "Dennis"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Thompson",
        "Perlman", "Torvalds", "Allen", "Backus", "Wilson", "Berners-Lee", "Johnson", "van Rossum",
        "Borg", "Wirth", "Lamarr", "Ritchie"]
COUNTRIES = ["FR", "DE", "GB", "US", "ES", "IT", "NL", "SE", "PL", "PT"]
BRANDS = ["visa", "mastercard", "amex"]
MERCHANTS = ["Coffee Corner", "Book Nook", "City Rail", "Green Grocer", "Cloud Hosting Ltd",
             "Pixel Games", "Taxi Now", "Pharmacy Plus", "Hotel Central", "Online Market"]
CURRENCIES = {"FR": "EUR", "DE": "EUR", "ES": "EUR", "IT": "EUR", "NL": "EUR", "PT": "EUR",
              "GB": "GBP", "US": "USD", "SE": "SEK", "PL": "PLN"}
EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

SCHEMA = """
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    holder_name TEXT NOT NULL,
    email TEXT NOT NULL,
    country TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'frozen', 'closed')),
    created_at TEXT NOT NULL
);
CREATE TABLE cards (
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    brand TEXT NOT NULL,
    last4 TEXT NOT NULL,
    pan_masked TEXT NOT NULL,
    expiry TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'blocked', 'expired'))
);
CREATE TABLE transactions (
    id INTEGER PRIMARY KEY,
    card_id INTEGER NOT NULL REFERENCES cards(id),
    amount_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    merchant TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('settled', 'pending', 'declined', 'refunded')),
    created_at TEXT NOT NULL
);
CREATE INDEX cards_account ON cards(account_id);
CREATE INDEX transactions_card ON transactions(card_id);
"""


def _when(rng: random.Random, days: int) -> str:
    moment = EPOCH + dt.timedelta(seconds=rng.randrange(days * 86400))
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def rows(seed: int = 42) -> dict[str, list[tuple[Any, ...]]]:
    """The demo rows, table by table, always the same for one seed."""
    rng = random.Random(seed)
    accounts: list[tuple[Any, ...]] = []
    cards: list[tuple[Any, ...]] = []
    transactions: list[tuple[Any, ...]] = []
    for account_id in range(1, ACCOUNTS + 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        email = f"{first}.{last}{account_id}@example.com".lower().replace(" ", "").replace("-", "")
        status = rng.choices(["active", "frozen", "closed"], weights=[88, 7, 5])[0]
        accounts.append((account_id, f"{first} {last}", email, rng.choice(COUNTRIES), status, _when(rng, 365)))
    for account in accounts:
        for _ in range(rng.randint(*CARDS_PER_ACCOUNT)):
            card_id = len(cards) + 1
            brand = rng.choice(BRANDS)
            last4 = f"{rng.randrange(10000):04d}"
            masked = ("3" + "*" * 10 if brand == "amex" else ("4" if brand == "visa" else "5") + "*" * 11) + last4
            expiry = f"{rng.randint(1, 12):02d}/{rng.randint(25, 30)}"
            status = rng.choices(["active", "blocked", "expired"], weights=[85, 10, 5])[0]
            cards.append((card_id, account[0], brand, last4, masked, expiry, status))
    country_of = {a[0]: a[3] for a in accounts}
    for tx_id in range(1, TRANSACTIONS + 1):
        card = rng.choice(cards)
        status = rng.choices(["settled", "pending", "declined", "refunded"], weights=[80, 10, 7, 3])[0]
        transactions.append((tx_id, card[0], rng.randint(150, 250_000), CURRENCIES[country_of[card[1]]],
                             rng.choice(MERCHANTS), status, _when(rng, 400)))
    return {"accounts": accounts, "cards": cards, "transactions": transactions}


def create_payments_db(path: Path, seed: int = 42) -> bool:
    """Create the demo database at ``path`` unless it exists; True when it was created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    try:
        conn.executescript(SCHEMA)
        for table, values in rows(seed).items():
            marks = ", ".join("?" * len(values[0]))
            conn.executemany(f"INSERT INTO {table} VALUES ({marks})", values)
        conn.commit()
    finally:
        conn.close()
    tmp.replace(path)  # a half-written database is never left under the real name
    return True


SELECT_CELL = """\
-- Read-only: the ten largest settled transactions, with the card and its holder.
SELECT t.id, t.amount_cents / 100.0 AS amount, t.currency, t.merchant, c.pan_masked, a.holder_name
FROM transactions t
JOIN cards c ON c.id = t.card_id
JOIN accounts a ON a.id = c.account_id
WHERE t.status = 'settled'
ORDER BY t.amount_cents DESC
LIMIT 10;"""

UPDATE_CELL = """\
-- why: SUP-1042 the holder reported card 7 stolen; block it
UPDATE cards SET status = 'blocked' WHERE id = 7;"""

INTRO = """\
# cellgate demo: the `payments` target

This notebook runs on the **payments** kernel: a SQL kernel hosted by the cellgate *agent*, next to
the (demo) payments database. Your Jupyter server talks to the cellgate *gateway*; the gateway
decides whether each cell may run.

Every cell you run on `payments` becomes a **task**, checked by policy: read-only SQL runs at
once; a write waits ("awaits review by dba") until a member of `dba` approves it, then the agent
runs it and the output appears in the cell; `DROP`/`TRUNCATE` are denied outright. A rejected cell
ends with an error naming who rejected it and why.

Try it:

1. Run the `SELECT` cell below: it runs at once (and is still recorded in the audit log).
2. Run the `UPDATE` cell. Its first line, `-- why: …`, is the justification reviewers see and
   the audit log keeps. It waits for review, with its risk level and reasons.
3. In a terminal, as the reviewer, list and approve (or reject) it (the commands were printed
   by `cellgate demo` and are in `demo.json`):
   `CELLGATE_URL=… CELLGATE_TOKEN=<reviewer token> cellgate reviews` then
   `… cellgate review approve <task id>` or `… cellgate review reject <task id> --comment "why"`.
"""


def sample_notebook() -> dict[str, Any]:
    """The demo notebook (nbformat 4.5, with cell ids), on the ``payments`` kernel."""
    def cell(cell_id: str, kind: str, source: str) -> dict[str, Any]:
        c: dict[str, Any] = {"id": cell_id, "cell_type": kind, "metadata": {}, "source": source}
        if kind == "code":
            c.update(execution_count=None, outputs=[])
        return c

    return {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "payments", "display_name": "payments (cellgate)", "language": "sql"},
            "language_info": {"name": "sql"},
        },
        "cells": [cell("intro", "markdown", INTRO), cell("select-top-transactions", "code", SELECT_CELL),
                  cell("block-stolen-card", "code", UPDATE_CELL)],
    }


def write_sample_notebook(path: Path) -> bool:
    """Write the demo notebook unless it exists (the user may have changed it); True if written."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sample_notebook(), indent=1) + "\n", encoding="utf-8")
    return True

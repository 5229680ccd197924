"""The demo's sample data and notebook."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import nbformat

from cellgate import demo_data
from cellgate.gateway.gate import justification


def test_rows_are_deterministic() -> None:
    assert demo_data.rows() == demo_data.rows()
    assert demo_data.rows(1) != demo_data.rows()


def test_database_is_created_once(tmp_path: Path) -> None:
    db = tmp_path / "payments.db"
    assert demo_data.create_payments_db(db) is True
    with sqlite3.connect(db) as conn:
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("accounts", "cards", "transactions")}
        assert counts["accounts"] == demo_data.ACCOUNTS and counts["transactions"] == demo_data.TRANSACTIONS
        assert 200 <= counts["cards"] <= 360
        assert conn.execute("SELECT count(*) FROM cards WHERE id = 7").fetchone()[0] == 1  # the UPDATE cell's card
        masked = [r[0] for r in conn.execute("SELECT pan_masked FROM cards")]
        assert all("*" in m and len(m) in (15, 16) for m in masked)
    assert demo_data.create_payments_db(db) is False
    assert not list(tmp_path.glob("*.tmp"))


def test_sample_notebook_is_valid_and_runs_on_payments(tmp_path: Path) -> None:
    path = tmp_path / "nb" / "payments.ipynb"
    assert demo_data.write_sample_notebook(path) is True
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "payments"
    kinds = [c.cell_type for c in nb.cells]
    assert kinds == ["markdown", "code", "code"]
    select, update = nb.cells[1].source, nb.cells[2].source
    assert "SELECT" in select and update.splitlines()[1].startswith("UPDATE")
    assert justification(update).startswith("SUP-1042")
    path.write_text(json.dumps({"changed": True}))
    assert demo_data.write_sample_notebook(path) is False

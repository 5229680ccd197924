"""Alembic migrations of the gateway's store (``env.py``, and one revision per file in ``versions``)."""

"""The kernels cellgate ships: the SQL kernel (``sql``), their specs, and the registry of kinds.

``registry`` is the one place a kind of target (sql, python) and its dialects are declared.
"""

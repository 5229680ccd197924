"""The cellgate SQL kernel: one Jupyter kernel for PostgreSQL, MariaDB/MySQL and SQLite.

Modules, one idea each:

- ``target``   -- settings from the environment, the parsed target URL, secret redaction
- ``split``    -- splitting a cell into statements without breaking quoted text
- ``gating``   -- what the gateway allowed a cell to run (``metadata.cellgate``), checked
- ``dialects`` -- the :class:`Dialect` contract and the URL-scheme registry
- ``postgres``, ``mysql``, ``sqlite`` -- one dialect each (connect, run, cancel, read-only mode)
- ``sqlite_readonly`` -- the SQLite authorizer of read-only connections
- ``session``  -- the connection, its worker thread, interrupt and reconnect
- ``render``   -- result sets as text/plain, text/html and Table Schema JSON
- ``kernel``   -- the ipykernel ``Kernel`` subclass tying these together
"""

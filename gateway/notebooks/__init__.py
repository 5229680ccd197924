"""Notebooks as tasks: a rendered notebook is one task's code, run cell by cell through the gate.

- :mod:`.document`: the rendered notebook (papermill's parameter injection, canonical JSON, the
  cells that run, what reviewers read);
- :mod:`.runner`: running a notebook task on an ephemeral kernel, one approved request per cell,
  and the executed notebook it leaves (papermill's error cells when a cell fails).
"""

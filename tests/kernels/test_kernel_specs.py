"""``CellgateKernelSpecManager`` serves ``cellgate-sql`` from memory next to installed specs."""

from __future__ import annotations

import sys

import pytest
from jupyter_client.kernelspec import NoSuchKernel

from cellgate.kernels.specs import CellgateKernelSpecManager, sql_kernel_spec


def test_sql_kernel_spec():
    spec = sql_kernel_spec()
    assert spec["argv"] == [sys.executable, "-m", "cellgate.kernels.sql", "-f", "{connection_file}"]
    assert (spec["display_name"], spec["language"], spec["interrupt_mode"]) == ("SQL", "sql", "message")


def test_manager_serves_sql_and_installed_specs(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path))
    ksm = CellgateKernelSpecManager()
    specs = ksm.find_kernel_specs()
    assert "cellgate-sql" in specs and "python3" in specs
    spec = ksm.get_kernel_spec("cellgate-sql")
    assert spec.argv[1:3] == ["-m", "cellgate.kernels.sql"] and spec.interrupt_mode == "message"
    assert ksm.get_kernel_spec("python3").language == "python"
    assert set(ksm.get_all_specs()) >= {"cellgate-sql", "python3"}
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_allow_list_applies():
    ksm = CellgateKernelSpecManager(allowed_kernelspecs={"python3"})
    assert "cellgate-sql" not in ksm.find_kernel_specs()
    with pytest.raises(NoSuchKernel):
        ksm.get_kernel_spec("cellgate-sql")

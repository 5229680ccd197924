"""Kernel specs cellgate serves from memory, next to the specs installed on the machine.

``CellgateKernelSpecManager`` adds ``cellgate-sql`` without writing a ``kernel.json`` anywhere,
so the agent can do::

    AsyncKernelManager(kernel_name="cellgate-sql", kernel_spec_manager=CellgateKernelSpecManager())

and still resolve ``python3`` (ipykernel) and any other installed spec.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel

SQL_KERNEL_NAME = "cellgate-sql"
_SQL_RESOURCES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sql")


def sql_kernel_spec() -> dict[str, Any]:
    """The ``kernel.json`` content of the SQL kernel.

    ``interrupt_mode`` is ``message``: the kernel receives ``interrupt_request`` on its control
    thread and cancels the running statement on the server, with no signal involved.
    """
    return {
        "argv": [sys.executable, "-m", "cellgate.kernels.sql", "-f", "{connection_file}"],
        "display_name": "SQL",
        "language": "sql",
        "interrupt_mode": "message",
        "env": {},
        "metadata": {"cellgate": {"kind": "sql"}},
    }


class CellgateKernelSpecManager(KernelSpecManager):
    """Installed kernel specs plus cellgate's in-memory ones (today: ``cellgate-sql``)."""

    def _builtin_specs(self) -> dict[str, tuple[str, dict[str, Any]]]:
        return {SQL_KERNEL_NAME: (_SQL_RESOURCES, sql_kernel_spec())}

    def _allowed(self, name: str) -> bool:
        return not self.allowed_kernelspecs or name in self.allowed_kernelspecs

    def find_kernel_specs(self) -> dict[str, str]:
        specs = super().find_kernel_specs()
        for name, (resource_dir, _) in self._builtin_specs().items():
            if self._allowed(name):
                specs[name] = resource_dir
        return specs

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        builtin = self._builtin_specs().get(kernel_name.lower())
        if builtin is None:
            return super().get_kernel_spec(kernel_name)
        if not self._allowed(kernel_name.lower()):
            raise NoSuchKernel(kernel_name)
        resource_dir, spec = builtin
        return self.kernel_spec_class(resource_dir=resource_dir, **spec)

    def _get_kernel_spec_by_name(self, kernel_name: str, resource_dir: str) -> KernelSpec:
        if kernel_name in self._builtin_specs():
            return self.get_kernel_spec(kernel_name)
        return super()._get_kernel_spec_by_name(kernel_name, resource_dir)

    def remove_kernel_spec(self, name: str) -> str:
        if name in self._builtin_specs():
            raise ValueError(f"{name} is built into cellgate and cannot be removed")
        return super().remove_kernel_spec(name)

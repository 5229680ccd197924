"""Launch the SQL kernel: ``python -m cellgate.kernels.sql -f {connection_file}``."""

from ipykernel.kernelapp import IPKernelApp

from .kernel import SQLKernel

if __name__ == "__main__":
    IPKernelApp.launch_instance(kernel_class=SQLKernel)

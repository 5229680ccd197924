"""cellgate: reviewed, audited access to production from Jupyter notebooks."""

__version__ = "0.1.0"

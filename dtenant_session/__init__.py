"""dtenant: a Docker daemon of their own for every user of a shared Linux host."""

__version__ = "0.1.0"

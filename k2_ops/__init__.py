"""K2 Ops: the ops library (local stack, exchange simulator, validation, deployment) behind the `k2` CLI."""

from streamer import __version__  # one version for the whole distribution

__all__ = ["__version__"]

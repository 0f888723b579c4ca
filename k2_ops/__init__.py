"""K2 Ops: the ops library (local stack, exchange simulator, validation, deployment) behind the `k2` CLI."""

__version__ = "2.0.0"

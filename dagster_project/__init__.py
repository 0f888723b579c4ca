"""Dagster definitions of K2 Ops: `definitions.py` lists everything; the logic lives in `k2_ops`."""

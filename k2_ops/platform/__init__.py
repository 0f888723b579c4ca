"""The local platform: the core stack (`k2_ops.stack`: Kafka, registry, Prometheus, Alertmanager) with what
runs on it (the simulator, the active streamer of `k2_ops.deploy`, the Dagster UI), and the commands that run
it (`k2 run`, `k2 stack up|down|status`).

It is the one package that builds on both `k2_ops.stack` and `k2_ops.deploy`, so neither imports the other
the wrong way (deploy builds on stack; the layering test, tests/test_layers.py, keeps it so).
"""

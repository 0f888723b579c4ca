"""`k2 bench` / `make bench`: a reproducible benchmark of the streamer on the local stack.

Figures (see docs/performance.md for what each one measures exactly):
1. floor: a bare websockets + json client over TLS reading the simulator at full speed;
2. streamer end to end at full speed (TLS WebSocket -> parse -> Avro -> Kafka acks=all, delivery confirmed);
3. latency at fixed rates: exchange event time -> Kafka log append (LogAppendTime), p50 / p99 / max;
4. memory: steady RSS at a fixed rate over minutes and its slope;
5. resilience costs: loss and duplicates across rotations, stall and drop recovery, blue-green handover gap.

Modules: config (one validated settings object, `--quick`), stats and machine (pure), procs (simulator,
floor client and streamer processes, CPU pinning), kafka_io (topics with LogAppendTime, reading records),
phases (one function per figure), report (JSON and the Markdown table), runner, cli.
"""

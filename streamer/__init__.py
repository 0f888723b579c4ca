"""K2 streamer: Binance WebSocket market data → Avro → Kafka, with rotation, heartbeat and full metrics."""

__version__ = "2.0.0"

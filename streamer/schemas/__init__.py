"""Avro schemas (*.avsc) of the records the streamer produces, one per stream kind."""

"""Worker side of poolsvc: the event loop, connections, pool shards and load."""

"""One worker's pool shard and what it holds: the pool's decisions, backoff, adaptive
sizing, the pooled connection, the client that waits on it, the target, and the
circuit breaker's pure decisions.
"""

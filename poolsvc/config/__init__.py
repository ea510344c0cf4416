"""The run's configuration: the key table, loading and checking a config, the TLS keys,
the shards across machines, the plan resolved from it, the exit codes of a bad one.
"""

"""The run's figures rendered: the report (lines, key=value, JSON), the JSON result,
shards merged, the HTML report, the read model and its Prometheus exposition.
"""

"""``poolsvc churn``: the same load pooled and per request, in a private network namespace,
with packet captures read back as evidence.
"""

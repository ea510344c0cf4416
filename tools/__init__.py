"""Developer tools for poolsvc: the embedded misbehaving target server (tools.target)."""

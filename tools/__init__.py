"""Development tools for poolsvc (not installed): benchmarks, chaos scenarios, nginx."""

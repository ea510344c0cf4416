"""The control plane's servers and their clients: the JSON control protocol, the control
socket and the /metrics endpoint (one bounded-peers core), the socket's path and
peers, the command handlers, the fault board, the status views.
"""

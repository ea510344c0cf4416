"""The wire: the transport every socket operation goes through, TLS, the request bytes
and header checks, and the dead ends the connect_fail fault dials.
"""

"""The accelerated path: the request path's steady state in C (``_lane.c``) and the
Python side that chooses it, builds it and takes connections back from it.
"""

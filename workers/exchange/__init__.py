"""A request's way through a worker: connections opened and closed (the dialer), sent,
answered, failed, the open loop's backlog, the drain, the warm-up, the worker's own
FD audit, and the pure decisions they follow. The parts reach each other through the
interfaces of :mod:`workers.exchange.peers`.
"""

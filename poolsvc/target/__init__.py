"""The embedded target: an HTTP/1.1 server that misbehaves on command, for real.

:class:`TargetServer` starts it as a subprocess (``python -m poolsvc.target``) and
controls it; ``poolsvc run`` with no host uses it. See :mod:`poolsvc.target.serve`.
"""

from poolsvc.target.launcher import TargetServer

__all__ = ["TargetServer"]

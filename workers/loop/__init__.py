"""The event loop and what it keeps: the epoll set, the deadlines, the timerfd waker,
the run state, the shape of the load, the worker's spec, and the interface of the
accelerated path it polls through.
"""

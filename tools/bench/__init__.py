"""`make bench`: poolsvc side by side with wrk, hey and Locust, and its own figures.

    python -m tools.bench [--rounds 5] [--seconds 5] [--write docs/benchmarks.md] [--only 1 ...]

(``--only``: just the sections numbered, e.g. ``--only 1`` for the head to head.)

Sections:

1. **Head to head.**
   - Setup: nginx on core 0 (one worker, ``return 200``, keep-alive); every load
     generator on core 1; 50 connections each.
   - Tools: poolsvc (1 worker, closed loop) through its accelerated path and
     through the pure-Python one (``POOLSVC_NO_EXTENSIONS=1``), wrk ``-t1 -c50``,
     hey ``-c 50``, Locust FastHttpUser (1 process, 50 users).
   - Rounds are interleaved (A B C D, A B C D, ...).
   - Per tool: req/s median, min and max; CPU per request (user + sys of the
     generator's processes, from the OS); p50/p99.
   - The median of the per-round ratios poolsvc/wrk, poolsvc/hey and
     poolsvc/locust.
2. **CPU per request in the steady state.** User and kernel time of the process
   doing the work (poolsvc's worker, wrk), start-up excluded, per request
   counted by nginx: where the difference between the two comes from.
3. **Reading status costs nothing.** poolsvc throughput with
   ``poolctl status --watch 0.2`` running, against without (interleaved).
4. **Scaling.** Workers 1 and 2 against the embedded target and nginx (both
   cores shared).
5. **Open-loop accuracy.** Achieved over asked rate at a few rates.
6. **Memory.** Worker RSS with 1,000 and 10,000 pooled connections.
7. **Where the time goes.** py-spy samples of a worker under load, as self time
   per function.

One module per section (the package's files name them); the sections that can run alone
have their own command line (``python -m tools.bench.openloop``, ``.overtls``, ``.clients``),
and :mod:`tools.bench.statuscalls` times ``status`` round trips apart.

Each section prints a markdown table. ``--write`` puts them all in
docs/benchmarks.md, with the commands and the machine. Every load run is
bounded by its duration.
"""

"""The run's figures computed from the counters: per-second intervals, the ledger of
every request, who was the limit, the timeline's rows, HdrHistogram logs, thresholds
and the gate that judges them, socket evidence, and the files they are written to.
"""

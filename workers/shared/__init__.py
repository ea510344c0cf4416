"""What the workers share with each other and with the supervisor: the shared-memory
layout, the stats slot, the histogram, the names of errors and faults, the breaker
rows as a worker sees them, the one meter that writes a request's counters, and the
form of every lifecycle table.
"""

"""The soak: a steady publish load against the real broker under random faults.

``scripts/soak --help`` (or ``python -m tests.soak``) runs it. One fault per cycle,
drawn from a printed seed; every accepted ``message_id`` is reconciled with a consumer
at the end, and a table per fault kind says what was accepted, delivered, lost and
duplicated. Not part of CI: it takes minutes and stops the broker it is aimed at.
"""

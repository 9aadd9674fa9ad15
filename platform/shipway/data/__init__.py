"""Data: raw events from landing to the lake, and the contracts that admit them.

The event generator, Delta tables (delta-rs) and the append-only ledgers on them, data
contracts (`contracts`, the reviewed file) and their gates (`gates`), the admission ledger
(write, audit, publish), landing (`landing`), dbt outputs published to Delta (`warehouse`),
and what `shipway data` does (`commands`).
Layer 3: may import the base modules and `shipway.stats`; nothing above.
"""

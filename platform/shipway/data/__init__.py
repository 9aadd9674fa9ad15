"""Data: raw events from landing to the lake, and the contracts that admit them.

The event generator, Delta tables (delta-rs), data contracts and their gates, the admission
ledger (write, audit, publish), dbt outputs published to Delta, and the `shipway data` commands.
May import `shipway.errors`, `shipway.paths`, `shipway.resources`; nothing from later stages.
"""

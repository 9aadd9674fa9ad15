"""Serving: model bundles and signed model packages, Shipway's MLServer runtime, the Envoy data
plane, the control plane (`control_plane`, its API `control_api`, its saved state `state`), the
prediction spool and log, one-call scoring (`scoring`), Seldon Core as the scale-out target,
and the client (and traffic generator) that the platform, the demo and tests call it with.

Serving is the data plane's side of the house: it knows bundles, not declarations, rollouts or
releases; what it needs from above (metric collectors, the phase of each model's rollout) is
handed to it by whoever starts it. Layer 5: may import `shipway.features`, `shipway.data`,
`shipway.stats` and the base modules. The model servers run `mlserver_runtime` in their own
environment, with only its import closure (`package.RUNTIME_SOURCES`).
"""

"""`python -m shipway.cli`: how Shipway starts its own services (the control plane, the feature
service) with the interpreter that runs it."""

from shipway.cli import main

raise SystemExit(main())

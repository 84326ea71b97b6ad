"""`python -m telemetryd` runs the command line."""

from telemetryd.cli import main

raise SystemExit(main())

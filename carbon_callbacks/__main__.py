"""``python -m carbon_callbacks``: the CLI."""

from carbon_callbacks.cli import main

raise SystemExit(main())

"""`python -m barkstream.services.cli COMMAND ...`: the server commands without the client entry point."""

from .main import main

raise SystemExit(main())

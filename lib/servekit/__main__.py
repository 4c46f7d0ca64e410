"""``python -m servekit``: the command-line runner (see ``python -m servekit --help``)."""

from servekit._cli import main

raise SystemExit(main())

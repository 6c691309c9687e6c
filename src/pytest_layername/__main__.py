"""``python -m pytest_layername`` runs the ``layername`` command line."""

from .cli import main

raise SystemExit(main())

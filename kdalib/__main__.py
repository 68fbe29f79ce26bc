"""``python -m kdalib`` is the same as the ``kdalib`` console script."""

from kdalib.cli import main

raise SystemExit(main())

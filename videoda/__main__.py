"""``python -m videoda``: see ``videoda.cli``."""

from videoda.cli import main

raise SystemExit(main())

"""``python -m tensordb ...`` runs the command line (see :mod:`tensordb.cli`)."""

import sys

from .cli import main

sys.exit(main())

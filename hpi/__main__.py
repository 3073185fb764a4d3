"""``python -m hpi`` is the ``hpi`` command."""

import sys

from hpi.cli import main

sys.exit(main())

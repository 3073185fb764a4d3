"""``python -m hpi.serving --pipeline NAME ...`` is ``hpi serve --pipeline NAME ...``."""

import sys

from hpi.cli.serve import main

sys.exit(main())

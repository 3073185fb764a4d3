"""``python -m hpi.serving --pipeline NAME ...`` is ``hpi serve --pipeline NAME ...``."""

import sys

from hpi.serving.cli import main

sys.exit(main())

"""``python -m rfstream``: the same as the ``rfstream`` command."""

import sys

from rfstream.cli import main

sys.exit(main())

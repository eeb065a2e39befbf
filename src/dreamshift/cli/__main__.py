"""``python -m dreamshift.cli``: the same as the ``dreamshift`` command."""

import sys

from dreamshift.cli import main

sys.exit(main())

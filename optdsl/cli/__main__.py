"""``python -m optdsl.cli``: the same as the ``optdsl`` command."""
import sys

from . import main

sys.exit(main())

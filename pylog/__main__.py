"""``python -m pylog ...`` runs the command line (as the ``pylog`` script does)."""
import sys

from pylog.cli import main

sys.exit(main())

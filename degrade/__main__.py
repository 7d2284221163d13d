"""``python -m degrade`` runs the CLI."""

import sys

from degrade.cli import main

sys.exit(main())

"""``python -m ganstack`` (also what ``torchrun -m ganstack`` runs)."""

import sys

from ganstack.cli import main

sys.exit(main())

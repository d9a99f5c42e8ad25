"""``python -m spoofloss.metrics --cm SCORES --cm_key KEYS`` (see cli.py)."""

import sys

from .cli import main

sys.exit(main())

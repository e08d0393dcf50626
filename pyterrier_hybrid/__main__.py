"""``python -m pyterrier_hybrid`` is the ``pyterrier-hybrid`` command."""
import sys

from .cli import main

sys.exit(main())

"""``python -m webhook_dsl`` is the ``webhook-dsl`` command."""

import sys

from .cli import main

sys.exit(main())

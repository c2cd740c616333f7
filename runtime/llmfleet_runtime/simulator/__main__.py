"""``python -m llmfleet_runtime.simulator ...`` runs :func:`.cli.main`."""

import sys

from .cli import main

sys.exit(main())

"""``python -m llmfleet_runtime.launcher ...`` runs :func:`.cli.main`."""

import sys

from .cli import main

sys.exit(main())

import sys

from llmfleet.cli import main

sys.exit(main())

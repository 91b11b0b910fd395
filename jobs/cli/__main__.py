"""`python -m jobs.cli …` is `homepage …`."""

import sys

from jobs.cli.main import main

sys.exit(main())

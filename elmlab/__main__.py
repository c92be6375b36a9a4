"""`python -m elmlab` is `elmlab`."""

import sys

from elmlab.cli import main

sys.exit(main())

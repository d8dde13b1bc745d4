"""`python -m flywheel.cli`: how the dev stack and the tests start a command."""

import sys

from flywheel.cli import main

sys.exit(main())

"""The policy moved to the ground layer, `flywheel.policy` (one module per section, one loader); this
name stays only until the last importer has moved, and then goes."""

from flywheel.policy import *  # noqa: F401,F403
from flywheel.policy import __all__  # noqa: F401

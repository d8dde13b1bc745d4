"""The dataset store moved to the ground layer, `flywheel.datastore`; this name is the same module
until the last importer has moved, and then goes."""

import sys

from flywheel import datastore

sys.modules[__name__] = datastore

"""The example distribution's module on the path: dvbench's suite runs its test uninstalled."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

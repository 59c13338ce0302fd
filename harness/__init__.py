"""dvbench's core: the plugin contract, records, specs, runner and leaderboards."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dvbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

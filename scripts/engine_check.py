"""`alliance-bayes engine-check`, kept as a script: run ``python scripts/engine_check.py --help``."""

import sys

from alliance_bayes.cli import subcommand

if __name__ == "__main__":
    sys.exit(subcommand("engine-check")())

"""`alliance-bayes sbc`, kept as a script: run ``python scripts/sbc.py --help``."""

import sys

from alliance_bayes.cli import subcommand

if __name__ == "__main__":
    sys.exit(subcommand("sbc")())

"""Fit an alliance model and write a results bundle. Run ``python scripts/fit.py --help``."""

import sys

from alliance_bayes.cli import run_fit

if __name__ == "__main__":
    sys.exit(run_fit())

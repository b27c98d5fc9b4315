"""What every run records so that it can be reproduced and audited: versions, commit, run id."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "alliance-bayes", "pymc", "pytensor", "nutpie", "arviz", "arviz-base", "arviz-stats",
    "arviz-plots", "numpy", "pandas", "xarray", "matplotlib", "h5netcdf", "numba",
)  # fmt: skip

# A source checkout: src/alliance_bayes/ two levels below the repository root.
_CHECKOUT = Path(__file__).resolve().parents[2]


def package_versions() -> dict[str, str]:
    """Versions of Python and of every package a result depends on."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str | None:
    """The checkout's commit, with ``+dirty`` when its work tree has changes.

    ``None`` for an installed package (not inside this project's own checkout), so that a wheel
    installed in some other repository's virtual environment never reports that repository.
    """
    if not ((_CHECKOUT / ".git").exists() and (_CHECKOUT / "pyproject.toml").is_file()):
        return None
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_CHECKOUT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_CHECKOUT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def time_id() -> str:
    """A sortable folder name from the current UTC time (``20261201T132000Z``)."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"


def run_id(*determinants: object) -> str:
    """Sortable and unique: UTC time plus a digest of what determines the draws."""
    key = json.dumps(determinants, sort_keys=True, default=str)
    return f"{time_id()}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def environment() -> dict[str, object]:
    """Versions, platform, commit and time: the part of ``run.json`` that every result shares."""
    return {
        "packages": package_versions(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "created_utc": utc_now(),
    }

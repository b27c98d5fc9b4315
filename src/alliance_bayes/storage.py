"""Files written once and atomically: run folders, JSON and the DataTree of draws.

Every results folder (a fit's bundle, a comparison, a sensitivity run, SBC summaries) is written
through :func:`atomic_folder`, so that a reader never sees a half-written folder; JSON is strict
(NaN becomes null); the draws are written by :func:`write_datatree` (h5netcdf, compressed).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

#: Folder names: letters, digits, ``_``, ``.`` and ``-`` (no path separators, no leading dot).
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def check_name(label: str, name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is a safe folder name (see :data:`SAFE_NAME`)."""
    if not SAFE_NAME.match(name):
        raise ValueError(f"{label} {name!r} must match {SAFE_NAME.pattern}")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def _clean_json(obj: Any) -> Any:
    """Strict JSON: NaN/inf become null."""
    if isinstance(obj, dict):
        return {str(k): _clean_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean_json(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dump_json(obj: Any, path: Path) -> None:
    text = json.dumps(
        _clean_json(json.loads(json.dumps(obj, default=_json_default))),
        indent=2,
        ensure_ascii=False,
        allow_nan=False,
    )
    path.write_text(text + "\n", encoding="utf-8")


def _clean_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """netCDF attributes must be str, numbers or 1-D arrays of them; JSON-encode anything else."""
    out = {}
    for k, v in attrs.items():
        if isinstance(v, str | int | float | np.number):
            out[str(k)] = v
        elif isinstance(v, bool | np.bool_):
            out[str(k)] = int(v)
        elif isinstance(v, list | tuple | np.ndarray) and all(
            isinstance(x, str | int | float | np.number) for x in np.ravel(np.asarray(v, object))
        ):
            out[str(k)] = np.asarray(v) if not all(isinstance(x, str) for x in v) else list(v)
        else:
            out[str(k)] = json.dumps(v, default=_json_default, ensure_ascii=False)
    return out


def prepare_for_netcdf(dt: xr.DataTree) -> xr.DataTree:
    """Copy of ``dt`` that h5netcdf can write.

    Object-dtype variables (nutpie's ``divergence_message``) become fixed-width unicode with
    ``None`` as the empty string, and attributes that netCDF cannot hold are JSON-encoded.
    """
    groups: dict[str, xr.Dataset] = {}
    for node in dt.subtree:
        ds = node.to_dataset(inherit=False)
        for name in list(ds.variables):
            var = ds[name]
            if var.dtype == object:
                flat = ["" if x is None else str(x) for x in var.values.ravel()]
                arr = np.asarray(flat, dtype=str).reshape(var.shape)
                ds[name] = var.copy(data=arr)
            ds[name].attrs = _clean_attrs(ds[name].attrs)
        ds.attrs = _clean_attrs(ds.attrs)
        groups[node.path] = ds
    return xr.DataTree.from_dict(groups)


@contextmanager
def atomic_folder(parent: Path, name: str) -> Iterator[Path]:
    """Write ``parent/name`` atomically: yield a temporary sibling, rename it into place on success.

    On any exception (an interrupt included) the temporary folder is removed, so nothing that looks
    finished is left behind. An existing ``parent/name`` is never overwritten.
    """
    check_name("folder name", name)
    final = parent / name
    if final.exists():
        raise FileExistsError(f"{final} exists; refusing to overwrite it")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=parent))
    try:
        yield tmp
        if final.exists():  # another writer won the race while we were writing
            raise FileExistsError(f"{final} appeared during writing; not replacing it")
        # mkdtemp creates the folder private (0700); give the result ordinary permissions.
        os.chmod(tmp, 0o755)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_COMPRESSION = {"zlib": True, "complevel": 4, "shuffle": True}
#: Draws kept per chain of the pointwise log-likelihood in a compact file (as many as the posterior
#: predictive keeps): PSIS-LOO from 1,000 draws is as reliable as from 6,000 for these models, and
#: the full array (draws x clients) was a third of the bundle.
COMPACT_LOGLIK_DRAWS_PER_CHAIN = 250


#: Dimensions that index clients or providers: arrays over them are the large ones.
_UNIT_DIMS = ("client", "provider", "membership")
_REPLICATED_GROUPS = ("posterior_predictive", "prior_predictive", "log_likelihood")


def _per_unit(group: str | None, dims: tuple) -> bool:
    """True for replicated data and for draws of per-client or per-provider quantities."""
    return group in _REPLICATED_GROUPS or any(
        str(d) in _UNIT_DIMS or str(d).startswith("client_") for d in dims
    )


def write_datatree(dt: xr.DataTree, path: Path, *, compact: bool = False) -> None:
    """Write ``dt`` to ``path`` (h5netcdf), every numeric array zlib-compressed.

    ``compact=False`` (caches) is lossless. ``compact=True`` (the results bundle) also stores as
    float32 (7 significant digits, far inside any Monte Carlo error) the replicated data and the
    draws of per-client and per-provider quantities, the bulk of the file; population parameters,
    from which every reported estimand is computed, keep float64, so estimands recomputed from a
    bundle equal the run's exactly. It also thins the pointwise log-likelihood to
    :data:`COMPACT_LOGLIK_DRAWS_PER_CHAIN` draws per chain (its ``thinned_every`` attribute says
    by how much).
    """
    if compact and "log_likelihood" in dt.children:
        loglik = dt["log_likelihood"].to_dataset()
        thin = max(1, loglik.sizes.get("draw", 1) // COMPACT_LOGLIK_DRAWS_PER_CHAIN)
        if thin > 1:
            dt = dt.copy()
            dt["log_likelihood"] = loglik.isel(draw=slice(None, None, thin)).assign_attrs(
                thinned_every=thin
            )
    prepared = prepare_for_netcdf(dt)
    encoding: dict[str, dict[str, dict[str, Any]]] = {}
    for node in prepared.subtree:
        ds = node.to_dataset(inherit=False)
        for name, var in ds.data_vars.items():
            if var.dtype.kind not in "fiub" or var.ndim == 0:
                continue
            enc: dict[str, Any] = dict(_COMPRESSION)
            if compact and var.dtype.kind == "f" and _per_unit(node.name, var.dims):
                enc["dtype"] = "float32"
            encoding.setdefault(node.path, {})[str(name)] = enc
    prepared.to_netcdf(path, engine="h5netcdf", encoding=encoding)


def read_datatree(path: Path) -> xr.DataTree:
    """Read a DataTree written by :func:`write_datatree`, fully into memory."""
    with xr.open_datatree(path, engine="h5netcdf") as dt:
        return dt.load()

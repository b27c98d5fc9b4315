"""nutpie's C entry points for a PyMC model, cached on disk between processes.

nutpie (numba backend) calls a model through two C functions: the log density with its gradient,
and the expansion of an unconstrained point into every stored variable. It builds each as a
``numba.cfunc`` around the functions PyTensor compiled. PyTensor caches those inner functions on
disk, but nutpie's wrappers are closures that read the data containers with ``literal_unroll`` and
``overload``, which numba cannot cache, so every process compiled and linked them again: about 9 of
the 11 s nutpie spent compiling the default model with a warm cache, and the same again in every
SBC worker and every refitted fold.

:func:`cached_wrappers` replaces that one step. Each wrapper is written out as plain source, one
line per data container, and compiled with ``cache=True`` under PyTensor's numba cache, keyed by
the SHA-256 of that source together with PyTensor's own cache keys of the two inner functions. A
different graph, data shape rank or dtype gives a different key; data *values* are read through
nutpie's user-data record at run time, so refits with new data reuse the same compiled wrappers.
The wrappers compute exactly what nutpie's do (same return codes), so draws do not change.

The replacement covers one nutpie release (:data:`NUTPIE_VERSION`; ``requirements.lock`` pins
it). With any other version, or where PyTensor gives an inner function no cache key, nutpie's own
compile runs unchanged.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import numpy as np

#: The nutpie release whose ``_compile_pymc_model_numba`` :func:`compile_pymc_model_numba` mirrors.
NUTPIE_VERSION = "0.16.11"
# Bump when the generated source's meaning changes without its text changing.
_WRAPPER_VERSION = "1"


@contextmanager
def cached_wrappers() -> Iterator[None]:
    """Within this block, nutpie compiles PyMC models with cached C wrappers (see module doc)."""
    import nutpie
    import nutpie.compile_pymc as compile_pymc

    if nutpie.__version__ != NUTPIE_VERSION:
        yield
        return
    with mock.patch.object(compile_pymc, "_compile_pymc_model_numba", compile_pymc_model_numba):
        yield


def compile_pymc_model_numba(model, pymc_initial_point_fn, var_names=None, **kwargs):
    """nutpie's ``_compile_pymc_model_numba`` with cacheable wrappers (same arguments and result)."""
    import numba
    from nutpie.compile_pymc import (
        CompiledPyMCModel,
        _compile_pymc_model_numba,
        _make_functions,
        _prepare_dims_and_coords,
        make_user_data,
    )
    from pytensor.link.numba.cache import CACHED_SRC_FUNCTIONS

    (n_dim, n_expanded, logp_fn_pt, expand_fn_pt, initial_point_fn, shape_info, renamed) = (
        _make_functions(
            model,
            mode="NUMBA",
            compute_grad=True,
            join_expanded=True,
            pymc_initial_point_fn=pymc_initial_point_fn,
            var_names=var_names,
        )
    )
    logp_fn = logp_fn_pt.vm.jit_fn
    expand_fn = expand_fn_pt.vm.jit_fn
    inner_keys = [CACHED_SRC_FUNCTIONS.get(fn.py_func) for fn in (logp_fn, expand_fn)]
    if None in inner_keys or kwargs:
        return _compile_pymc_model_numba(model, pymc_initial_point_fn, var_names, **kwargs)

    # Stable container names (nutpie draws random ones), so that the record layout, and with it
    # the generated source, is the same in every process.
    shared_data: dict[str, np.ndarray] = {}
    shared_var_keys = {}
    for var in [*logp_fn_pt.get_shared(), *expand_fn_pt.get_shared()]:
        if var not in shared_var_keys:
            key = f"s{len(shared_var_keys)}"
            shared_var_keys[var] = key
            shared_data[key] = np.array(var.get_value(), order="C", copy=True)
            shared_data[key].flags.writeable = False
    user_data = make_user_data(shared_var_keys, shared_data)

    logp_keys = [shared_var_keys[v] for v in logp_fn_pt.get_shared()]
    expand_keys = [shared_var_keys[v] for v in expand_fn_pt.get_shared()]
    logp_c = _cached_cfunc(
        _logp_source(n_dim, logp_keys, shared_data),
        "nutpie_logp",
        numba.types.int64(
            numba.types.uint64,
            numba.types.CPointer(numba.types.double),
            numba.types.CPointer(numba.types.double),
            numba.types.CPointer(numba.types.double),
            numba.types.voidptr,
        ),
        inner=logp_fn,
        inner_key=inner_keys[0],
        keys=logp_keys,
        shared_data=shared_data,
        record=user_data.dtype,
    )
    expand_c = _cached_cfunc(
        _expand_source(n_dim, n_expanded, expand_keys, shared_data),
        "nutpie_expand",
        numba.types.int64(
            numba.types.uint64,
            numba.types.uint64,
            numba.types.CPointer(numba.types.double),
            numba.types.CPointer(numba.types.double),
            numba.types.voidptr,
        ),
        inner=expand_fn,
        inner_key=inner_keys[1],
        keys=expand_keys,
        shared_data=shared_data,
        record=user_data.dtype,
    )
    dims, coords = _prepare_dims_and_coords(model, shape_info, renamed)
    return CompiledPyMCModel(
        _n_dim=n_dim,
        dims=dims,
        _coords=coords,
        _shapes={name: tuple(shape) for name, _, shape in zip(*shape_info, strict=True)},
        compiled_logp_func=logp_c,
        compiled_expand_func=expand_c,
        initial_point_func=initial_point_fn,
        shared_data=shared_data,
        shared_var_keys=shared_var_keys,
        user_data=user_data,
        n_expanded=n_expanded,
        shape_info=shape_info,
        logp_func=logp_fn_pt,
        expand_func=expand_fn_pt,
        reparameterized_names=renamed,
    )


def _extract_lines(keys: list[str], shared_data: dict[str, np.ndarray]) -> list[str]:
    """Source lines that view each data container ``key`` in nutpie's user-data record as ``a{i}``.

    The record holds each container's address, size and shape (``nutpie.compile_pymc``'s
    ``make_user_data``); its layout depends only on the containers' order and ranks.
    """
    lines = ["    shared = numba.carray(user_data_, (), RECORD)['shared']"]
    for i, key in enumerate(keys):
        ndim = shared_data[key].ndim
        shape = "".join(f"int(shared['shape']['{key}'][{j}]), " for j in range(ndim))
        lines += [
            f"    p{i} = address_as_void_pointer(shared['data']['{key}'][()])",
            f"    n{i} = int(shared['size']['{key}'][()])",
            f"    a{i} = numba.carray(p{i}, n{i}, DTYPE_{key}).reshape(({shape}))",
        ]
    return lines


#: Arguments per tuple in a generated call: CPython builds a call of more than 30 arguments
#: through a list (``LIST_TO_TUPLE``), which numba cannot compile.
_ARGS_PER_TUPLE = 25


def _call_args(n_keys: int) -> tuple[list[str], str]:
    """Source lines and the argument text of ``inner(x, a0, a1, ...)`` for ``n_keys`` containers.

    Past :data:`_ARGS_PER_TUPLE` arguments they are packed in tuples of at most that many and
    passed as ``*(t0 + t1 + ...)``, which numba compiles.
    """
    names = ["x", *(f"a{i}" for i in range(n_keys))]
    if len(names) <= _ARGS_PER_TUPLE:
        return [], ", ".join(names)
    groups = [names[i : i + _ARGS_PER_TUPLE] for i in range(0, len(names), _ARGS_PER_TUPLE)]
    lines = [f"        t{j} = ({', '.join(g)},)" for j, g in enumerate(groups)]
    return lines, "*(" + " + ".join(f"t{j}" for j in range(len(groups))) + ")"


def _logp_source(n_dim: int, keys: list[str], shared_data: dict[str, np.ndarray]) -> str:
    packing, args = _call_args(len(keys))
    return "\n".join(
        [
            "def nutpie_logp(dim, x_, out_, logp_, user_data_):",
            f"    if dim != {n_dim}:",
            "        return -1",
            "    try:",
            f"        x = numba.carray(x_, ({n_dim},))",
            f"        out = numba.carray(out_, ({n_dim},))",
            "        logp = numba.carray(logp_, ())",
            *("    " + line for line in _extract_lines(keys, shared_data)),
            *packing,
            f"        logp_val, grad = inner({args})",
            "        logp[()] = logp_val",
            "        out[...] = grad",
            "        if not np.all(np.isfinite(out)):",
            "            return 3",
            "        if not np.isfinite(logp_val):",
            "            return 4",
            "    except Exception:",
            "        return 1",
            "    return 0",
            "",
        ]
    )


def _expand_source(
    n_dim: int, n_expanded: int, keys: list[str], shared_data: dict[str, np.ndarray]
) -> str:
    packing, args = _call_args(len(keys))
    return "\n".join(
        [
            "def nutpie_expand(dim, expanded, x_, out_, user_data_):",
            f"    if dim != {n_dim}:",
            "        return -1",
            f"    if expanded != {n_expanded}:",
            "        return -1",
            "    try:",
            f"        x = numba.carray(x_, ({n_dim},))",
            f"        out = numba.carray(out_, ({n_expanded},))",
            *("    " + line for line in _extract_lines(keys, shared_data)),
            *packing,
            f"        (values,) = inner({args})",
            "        out[...] = values",
            "    except Exception:",
            "        return -2",
            "    return 0",
            "",
        ]
    )


def _cached_cfunc(src, name, signature, *, inner, inner_key, keys, shared_data, record):
    """``numba.cfunc(signature, cache=True)`` of generated ``src``, cached under PyTensor's key scheme."""
    import numba
    from nutpie.compile_pymc import address_as_void_pointer
    from pytensor.link.numba.cache import compile_numba_function_src

    digest = hashlib.sha256(
        "\0".join([_WRAPPER_VERSION, NUTPIE_VERSION, src, inner_key, str(record)]).encode()
    ).hexdigest()
    env = {
        # numba's cache rebuilds a function's environment by importing the module named here.
        "__name__": __name__,
        "numba": numba,
        "np": np,
        "inner": inner,
        "address_as_void_pointer": address_as_void_pointer,
        "RECORD": record,
        **{f"DTYPE_{key}": shared_data[key].dtype for key in keys},
    }
    fn = compile_numba_function_src(src, name, env, cache_key=f"nutpie_{name}_{digest}")
    with warnings.catch_warnings():
        # If numba still finds something uncacheable it compiles without caching, as nutpie did.
        warnings.filterwarnings("ignore", message="Cannot cache compiled function")
        return numba.cfunc(signature, cache=True)(fn)

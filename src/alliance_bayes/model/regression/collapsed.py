r"""The Gaussian likelihood with provider effects integrated out, from sufficient statistics.

For a Normal likelihood the per-client form costs every gradient :math:`O(n)` (every client's
mean) and samples a vector of effects per provider. Both costs go: the fixed part of the mean is
linear in its coefficients, :math:`\mu_i = x_i^\top\theta + \sum_p w_{ip} z_i^\top u_p` with
:math:`x_i` the fixed design (intercept, baseline, covariates, care type, the care-type-specific
alliance parts; :func:`fixed_design`), :math:`\theta` their coefficients and
:math:`z_i = (1, W_{i1}, \dots, W_{iS})` the provider design (intercept and within parts), and
each provider's effects are Gaussian given the hyperparameters, :math:`u_p \sim \mathcal N(0,
\Sigma_{t[p]})`. So they can be integrated out in closed form, and what is left depends on the
data only through cross-products per provider.

Multiple membership
-------------------
A client who saw a coach and a therapist ties the two providers' effects together, so the
marginal likelihood does not factor by provider. It does factor given some of them: providers are
split into a *sampled* set :math:`\mathcal S` (their effects stay parameters) and a *collapsed*
set :math:`\mathcal C` such that every client has at most one collapsed provider
(:func:`split_providers`: the providers of the type with fewer providers among the clients with
several, then any more a client needs). Given :math:`\theta`, :math:`u_{\mathcal S}`,
:math:`\sigma` and :math:`\Sigma`, with residuals
:math:`r_i = y_i - x_i^\top\theta - \sum_{p \in \mathcal S} w_{ip} z_i^\top u_p` and, per collapsed
provider :math:`c`, :math:`\tilde Z_c` the rows :math:`w_{ic} z_i^\top` of its clients,
:math:`A_c = \tilde Z_c^\top \tilde Z_c`, :math:`g_c = \tilde Z_c^\top r_c` and
:math:`M_c = \sigma^2 \Sigma_{t[c]}^{-1} + A_c`, Woodbury's identity and the determinant lemma give
the exact

.. math::
    \log p(y \mid \theta, u_{\mathcal S}, \sigma, \Sigma) = -\tfrac n2 \log 2\pi\sigma^2
      - \frac{r^\top r}{2\sigma^2}
      + \sum_{c \in \mathcal C} \Big( -\tfrac12 \log|\Sigma_{t[c]}| - \tfrac12 \log|M_c|
      + \tfrac E2 \log\sigma^2 + \frac{g_c^\top M_c^{-1} g_c}{2\sigma^2} \Big)

(Searle, Casella & McCulloch 1992, *Variance Components*, ch. 6; the same algebra as lme4's
profiled deviance, Bates et al. 2015, doi:10.18637/jss.v067.i01). :math:`r^\top r` and
:math:`g_c` are quadratic and linear in :math:`(\theta, u_{\mathcal S})` with coefficients
:math:`X^\top X`, :math:`X^\top y`, :math:`y^\top y`, and per provider :math:`\tilde Z_p^\top X`,
:math:`\tilde Z_p^\top y`, :math:`A_p`, and per pair of providers sharing clients
:math:`B_{pq} = \sum_i w_{ip} w_{iq} z_i z_i^\top` (:class:`SufficientStatistics`), kept as its
rank-one factors (:mod:`~alliance_bayes.model.regression.coupling`). A gradient then costs
:math:`O(P E F + R E)` for :math:`R \le \min(\text{clients in pairs}, \text{pairs} \cdot E)`
factors, whatever the number of clients; the :math:`E \times E` Cholesky factors of :math:`M_c`
are written out elementwise, vectorised over providers. The statistics enter the model graph as
shared arrays (:attr:`SufficientStatistics.shared`), so the compiled gradient is the same for every
study with the same model.

Provider effects are drawn after sampling, exactly: :math:`u_c \mid y, \theta, u_{\mathcal S},
\sigma, \Sigma \sim \mathcal N(M_c^{-1} g_c, \sigma^2 M_c^{-1})`, one draw per posterior draw
(:func:`draw_provider_effects`), so the bundle holds ``u_provider`` (and ``u_provider_slope``) as
the per-client form does.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pytensor
import pytensor.tensor as pt
import scipy.sparse as sparse
import xarray as xr

from alliance_bayes.data.care import PROVIDER_TYPES
from alliance_bayes.model.regression.coupling import (
    rank_one_factors,
    rank_one_pair_sums,
    rank_one_scatter,
)
from alliance_bayes.model.regression.design import ModelData
from alliance_bayes.model.regression.predict import _draws, _log_density, _population_cov
from alliance_bayes.spec import ModelSpec

__all__ = [
    "SufficientStatistics",
    "collapsed_log_likelihood",
    "complete",
    "draw_provider_effects",
    "fixed_design",
    "is_collapsed",
    "sampled_noncentring",
    "split_providers",
    "sufficient_statistics",
]


def is_collapsed(spec: ModelSpec) -> bool:
    """Whether ``spec``'s likelihood is computed in collapsed form (``likelihood_form``)."""
    # Latent provider means make the alliance parts parameters: no fixed design to collapse over.
    if spec.likelihood_form == "per_client" or spec.hierarchy.between == "latent_mean":
        return False
    return spec.likelihood == "normal"


def n_effects(spec: ModelSpec, data: ModelData) -> int:
    """Effects per provider: 0 (none), 1 (intercept) or 1 + subscales (intercept and slopes)."""
    h = spec.hierarchy
    if spec.predictors.alliance == "composite" or not h.provider_intercepts:
        return 0
    return 1 + len(data.subscales) if h.provider_slopes else 1


def fixed_design(spec: ModelSpec, data: ModelData) -> np.ndarray:
    r"""The fixed part's design matrix :math:`X` (client, F), in the order of the model's :math:`\theta`.

    Columns: intercept; centred baseline; standardised covariates; then for the composite model the
    centred composite, else the care-type dummies (every care type but the reference: therapist,
    both against coach) when
    the spec has care-type intercepts, and one column per (care type, subscale, level) cell,
    :math:`1[c_i = c]\, a_{isl}`, the alliance part the slope :math:`b_{c,s,l}` multiplies.
    """
    n = data.n_clients
    cols = [np.ones((n, 1)), (data.baseline - data.baseline_mean)[:, None], data.covariates]
    if spec.predictors.alliance == "composite":
        cols.append(data.composite[:, None])
        return np.hstack(cols)
    care = np.eye(len(data.care_types))[data.care_index]  # (client, care_type)
    if spec.hierarchy.care_type_intercepts:
        cols.append(data.care_dummies())
    cells = care[:, :, None, None] * data.alliance[:, None]  # (client, care, subscale, level)
    cols.append(cells.reshape(n, -1))
    return np.hstack(cols)


def provider_design(data: ModelData, n_eff: int) -> np.ndarray:
    """:math:`z_i`: (client, E), the intercept and the within parts the provider effects multiply."""
    return np.column_stack([np.ones(data.n_clients), data.alliance[:, :, 0]])[:, :n_eff]


def split_providers(data: ModelData) -> np.ndarray:
    """Which providers' effects are sampled (True) so that no client has two collapsed providers.

    Every provider of the type with fewer providers among clients with several providers is
    sampled; a client still left with more than one collapsed provider (several of one type) has
    all of them but the first sampled too. Providers of single-provider clients only are collapsed.
    """
    n_prov = len(data.provider_type_index)
    idx, w = data.membership_index, data.membership_weight
    active = w > 0
    sampled = np.zeros(n_prov, dtype=bool)
    multi = active.sum(axis=1) > 1
    if not multi.any():
        return sampled
    shared = np.unique(idx[multi][active[multi]])
    types = data.provider_type_index[shared]
    counts = np.bincount(types, minlength=len(data.frame.provider_types))
    present = np.flatnonzero(counts)
    fewer = present[np.argmin(counts[present])]
    sampled[shared[types == fewer]] = True
    for i in np.flatnonzero(multi):
        left = [p for p in idx[i][active[i]] if not sampled[p]]
        sampled[left[1:]] = True
    return sampled


@dataclass(frozen=True)
class SufficientStatistics:
    """What the collapsed likelihood needs from the data, whatever the number of clients.

    ``xtx`` (F, F), ``xty`` (F,), ``yty`` and ``n`` over clients; ``col_sum`` (F,) the design's
    column sums and ``z_sum`` (P, E) the weighted provider-design sums (for the mean of
    :math:`\\mu`); per provider ``zx`` (P, E, F), ``zy`` (P, E), ``zz`` (P, E, E); pairs of
    providers sharing clients ``pair`` (Q, 2) with ``pair_zz`` (Q, E, E); ``sampled`` (P,) the split
    of :func:`split_providers`.
    """

    n: float
    yty: float
    xtx: np.ndarray
    xty: np.ndarray
    col_sum: np.ndarray
    zx: np.ndarray
    zy: np.ndarray
    zz: np.ndarray
    z_sum: np.ndarray
    pair: np.ndarray
    pair_zz: np.ndarray
    sampled: np.ndarray
    provider_type: np.ndarray
    n_types: int = len(PROVIDER_TYPES)

    @property
    def n_effects(self) -> int:
        return self.zz.shape[-1]

    @cached_property
    def collapsed_index(self) -> np.ndarray:
        """Collapsed providers, grouped by provider type (contiguous blocks, see ``type_counts``)."""
        c = np.flatnonzero(~self.sampled)
        return c[np.argsort(self.provider_type[c], kind="stable")]

    @cached_property
    def type_counts(self) -> np.ndarray:
        """Collapsed providers of each provider type, in the order of ``collapsed_index``."""
        types = self.provider_type[self.collapsed_index]
        return np.bincount(types, minlength=self.n_types)

    @cached_property
    def sampled_index(self) -> np.ndarray:
        return np.flatnonzero(self.sampled)

    @cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        r"""The arrays the log-likelihood reads, by name, one contiguous array per effect.

        ``n``, ``yty``, ``xtx``, ``xty`` the sums over clients;
        ``zx_c{e}`` (F, C) and ``zx_s{e}`` (F, S): θ times them is :math:`(\tilde Z_p^\top
        X\theta)_e` for the collapsed and the sampled providers; ``zy_c{e}``, ``zy_s{e}``;
        ``zz_c{e}{f}`` (C,), ``zz_s{e}{f}`` (S,); ``pair_ss{e}{f}`` the :math:`B_{pq}` entries of
        the pairs of sampled providers (:attr:`pair_roles`), at positions ``ss_a`` and ``ss_b``;
        for the pairs of a collapsed and a sampled provider, their blocks' rank-one factors
        ``pair_cs_factor`` (R, E) (:func:`~alliance_bayes.model.regression.coupling.
        rank_one_factors`) and each factor's positions ``pair_cs_c`` and ``pair_cs_s``;
        ``onehot`` (C, provider_type) of the collapsed providers' types and ``sampled_type`` (S,).
        Elementwise graphs over contiguous vectors fuse into one loop; strided slices of
        (P, E, E) arrays did not.
        """
        c, s, n_eff = self.collapsed_index, self.sampled_index, self.n_effects
        cont = np.ascontiguousarray
        roles = self.pair_roles
        out = {
            "n": np.asarray(float(self.n)),
            "yty": np.asarray(float(self.yty)),
            "xtx": self.xtx,
            "xty": self.xty,
            "onehot": np.eye(self.n_types)[self.provider_type[c]],
            "sampled_type": self.provider_type[s],
            **{k: roles[k] for k in ("ss_a", "ss_b")},
        }
        for e in range(n_eff):
            out |= {
                f"zx_c{e}": cont(self.zx[c, e].T),
                f"zx_s{e}": cont(self.zx[s, e].T),
                f"zy_c{e}": cont(self.zy[c, e]),
                f"zy_s{e}": cont(self.zy[s, e]),
            }
            for f in range(n_eff):
                out |= {
                    f"zz_c{e}{f}": cont(self.zz[c, e, f]),
                    f"zz_s{e}{f}": cont(self.zz[s, e, f]),
                    f"pair_ss{e}{f}": cont(self.pair_zz[roles["ss"], e, f]),
                }
        factors, block = rank_one_factors(self.pair_zz[roles["cs"]])
        # int32 positions: less memory to stream per gradient than int64 (measured 10% faster).
        out |= {
            "pair_cs_factor": factors,
            "pair_cs_c": roles["cs_c"][block].astype(np.int32),
            "pair_cs_s": roles["cs_s"][block].astype(np.int32),
        }
        return out

    @cached_property
    def shared(self) -> dict:
        """:attr:`arrays` as PyTensor shared variables, for the model graph.

        The compiled log density then reads them at run time. As constants they were compiled
        into the code: on a million clients that took 40 s per process, never reused, whereas
        shared arrays give the same compiled code for every study of the same model.
        """
        return {k: pytensor.shared(v, name=f"collapsed_{k}") for k, v in self.arrays.items()}

    @cached_property
    def pair_scatter(self):
        """(factors, C) sparse 0/1: a row vector over the pairs' rank-one factors times it sums
        into their collapsed providers."""
        rows = self.arrays["pair_cs_c"]
        return sparse.csr_matrix(
            (np.ones(len(rows)), (np.arange(len(rows)), rows)),
            shape=(len(rows), len(self.collapsed_index)),
        )

    @cached_property
    def pair_roles(self) -> dict[str, np.ndarray]:
        """Pairs of providers sharing clients, by role.

        ``ss`` pairs of sampled providers (positions ``ss_a``, ``ss_b`` among the sampled);
        ``cs`` pairs of a collapsed and a sampled provider (``cs_c`` among the collapsed,
        ``cs_s`` among the sampled). No pair has two collapsed providers.
        """
        where = np.full(len(self.sampled), -1)
        where[self.sampled_index] = np.arange(len(self.sampled_index))
        cpos = np.full(len(self.sampled), -1)
        cpos[self.collapsed_index] = np.arange(len(self.collapsed_index))
        a, b = self.pair[:, 0], self.pair[:, 1]
        ss = (where[a] >= 0) & (where[b] >= 0)
        cs_c = np.where(cpos[a] >= 0, cpos[a], cpos[b])
        cs_s = np.where(cpos[a] >= 0, where[b], where[a])
        cs = (cs_c >= 0) & (cs_s >= 0)
        return {
            "ss": np.flatnonzero(ss),
            "ss_a": where[a[ss]],
            "ss_b": where[b[ss]],
            "cs": np.flatnonzero(cs),
            "cs_c": cs_c[cs],
            "cs_s": cs_s[cs],
        }


def sufficient_statistics(
    spec: ModelSpec, data: ModelData, weight: np.ndarray | None = None
) -> SufficientStatistics:
    r"""The :class:`SufficientStatistics` of ``data`` under ``spec``.

    With ``weight`` (client,), client :math:`i`'s log-likelihood is counted :math:`v_i` times:
    its rows of :math:`y`, :math:`X` and :math:`Z` are scaled by :math:`\sqrt{v_i}`, so that
    every cross-product is weighted by :math:`v_i`. A 0/1 weight gives the statistics of a
    subset of the clients with every provider and provider pair of ``data`` kept (a provider
    without weighted clients contributes nothing), so that a K-fold refit has the shapes, and
    the compiled model, of the full fit. A client of weight 0 may have a missing outcome.
    """
    y, x = data.y, fixed_design(spec, data)
    n_eff = n_effects(spec, data)
    n_prov = len(data.provider_type_index)
    z = provider_design(data, n_eff)
    n, col_sum, z_rows = float(data.n_clients), x.sum(axis=0), z
    if weight is not None:
        weight = np.asarray(weight, dtype=float)
        root = np.sqrt(weight)
        n, col_sum, z_rows = float(weight.sum()), weight @ x, weight[:, None] * z
        y, x, z = np.where(weight > 0, y, 0.0) * root, x * root[:, None], z * root[:, None]
    idx, w = data.membership_index, data.membership_weight
    rows = np.repeat(np.arange(data.n_clients), idx.shape[1])
    # W[p, i] = w_ip: the provider-by-client membership matrix.
    weights = sparse.csr_matrix((w.ravel(), (idx.ravel(), rows)), shape=(n_prov, data.n_clients))
    squares = weights.multiply(weights).tocsr()
    zx = np.empty((n_prov, n_eff, x.shape[1]))
    zy, z_sum = np.empty((n_prov, n_eff)), np.empty((n_prov, n_eff))
    zz = np.empty((n_prov, n_eff, n_eff))
    for e in range(n_eff):
        zx[:, e] = weights @ (z[:, [e]] * x)
        zy[:, e] = weights @ (z[:, e] * y)
        z_sum[:, e] = weights @ z_rows[:, e]
    for e in range(n_eff):
        for f in range(n_eff):
            zz[:, e, f] = squares @ (z[:, e] * z[:, f])
    pairs, blocks = [], []
    active = w > 0
    for k in range(idx.shape[1]):
        for m in range(k + 1, idx.shape[1]):
            both = active[:, k] & active[:, m]
            if both.any():
                pairs.append(np.column_stack([idx[both, k], idx[both, m]]))
                ww = (w[both, k] * w[both, m])[:, None, None]
                blocks.append(ww * z[both, :, None] * z[both, None, :])
    if pairs:
        all_pairs = np.vstack(pairs)
        all_pairs.sort(axis=1)
        pair, inverse = np.unique(all_pairs, axis=0, return_inverse=True)
        pair_zz = np.zeros((len(pair), n_eff, n_eff))
        np.add.at(pair_zz, inverse.ravel(), np.concatenate(blocks))
    else:
        pair = np.zeros((0, 2), dtype=np.int64)
        pair_zz = np.zeros((0, n_eff, n_eff))
    return SufficientStatistics(
        n=n,
        yty=float(y @ y),
        xtx=x.T @ x,
        xty=x.T @ y,
        col_sum=col_sum,
        zx=zx,
        zy=zy,
        zz=zz,
        z_sum=z_sum,
        pair=pair.astype(np.int64),
        pair_zz=pair_zz,
        sampled=split_providers(data) if n_eff else np.zeros(n_prov, dtype=bool),
        provider_type=data.provider_type_index,
        n_types=len(data.frame.provider_types),
    )


def sampled_noncentring(stats: SufficientStatistics) -> np.ndarray:
    r"""How far each sampled provider's effects are non-centred: (S, E) weights in [0, 1].

    Each effect is sampled as its innovation given the effects before it (the rows of
    :math:`u_p = \operatorname{diag}(s_t) L z_p`): :math:`z_{pe} = v_{pe} / c_{te}^{1 - w_{pe}}` with
    :math:`v_{pe} \sim \mathcal N(0, c_{te}^{1 - w_{pe}})` and :math:`c_{te} = s_{te} L_{ee}`, so
    :math:`w = 1` is the non-centred :math:`z \sim \mathcal N(0, 1)` and :math:`w = 0` the centred
    innovation. As for the per-client form's intercepts (:func:`~alliance_bayes.model.regression.
    graph.provider_noncentring`; Papaspiliopoulos, Roberts & Sköld 2003),
    :math:`w_{pe} = \hat\sigma^2 / (\hat\sigma^2 + I_{pe} \hat s_{te}^2)`, one minus the
    reliability of the provider's data on that effect, with :math:`I_{pe} = (A_p)_{ee}` its
    information. A sampled provider on a large platform has a hundred or more clients, so its data
    dominate and the non-centred form alone samples it in long trajectories.

    :math:`\hat\sigma^2` and :math:`\hat s_{te}^2` are moment estimates from the sufficient
    statistics: the residual variance of the least-squares fit of the fixed design, and per
    provider type and effect, from :math:`g_{pe} = (\tilde Z_p^\top r)_e \approx I_{pe} u_{pe} +
    \varepsilon` with :math:`\operatorname{var}\varepsilon = \hat\sigma^2 I_{pe}`, the
    information-weighted moment estimate :math:`\hat s_{te}^2 = \sum_p (g_{pe}^2 - \hat\sigma^2
    I_{pe}) / \sum_p I_{pe}^2` (DerSimonian & Laird 1986, doi:10.1016/0197-2456(86)90046-2); an
    unweighted one was dominated by the providers with least data and centred slopes the data
    could not pin down. Where the estimate is not positive the effect stays non-centred. The
    weights only choose the parametrisation; the posterior is the same.
    """
    theta = np.linalg.lstsq(stats.xtx, stats.xty, rcond=None)[0]
    sigma2 = (stats.yty - 2.0 * theta @ stats.xty + theta @ stats.xtx @ theta) / stats.n
    info = np.einsum("pee->pe", stats.zz)
    cross = stats.zy - stats.zx @ theta
    w = np.ones_like(info)
    for t in np.unique(stats.provider_type):
        for e in range(stats.n_effects):
            on = (stats.provider_type == t) & (info[:, e] > 0)
            if on.sum() < 3:
                continue
            g, i = cross[on, e], info[on, e]
            s2 = float(np.sum(g**2 - sigma2 * i) / np.sum(i**2))
            if s2 > 0:
                w[on, e] = sigma2 / (sigma2 + i * s2)
    return w[stats.sampled_index]


_LOG_2PI = np.log(2.0 * np.pi)


def _residual_terms(stats: SufficientStatistics, theta, u_sampled, xp):
    r""":math:`r^\top r` and :math:`g_c`, as a list over effects of (..., C) arrays, in ``xp``.

    ``xp`` is ``pytensor.tensor`` (the model graph) or ``numpy`` (draws after sampling, where θ
    and ``u_sampled`` (..., S, E) carry a leading draw axis).
    """
    n_eff, a = stats.n_effects, (stats.arrays if xp is np else stats.shared)
    rr = a["yty"] - 2.0 * xp.dot(theta, a["xty"])
    rr = rr + (xp.dot(theta, a["xtx"]) * theta).sum(axis=-1)
    # g_c without the sampled providers' part: Z_c'y − (Z_c'X) θ.
    g = [a[f"zy_c{e}"] - xp.dot(theta, a[f"zx_c{e}"]) for e in range(n_eff)]
    if not len(stats.sampled_index):
        return rr, g
    u = [u_sampled[..., :, e] for e in range(n_eff)]
    for e in range(n_eff):
        rr = rr - 2.0 * (u[e] * (a[f"zy_s{e}"] - xp.dot(theta, a[f"zx_s{e}"]))).sum(axis=-1)
        # u_s' A_s u_s and 2 u_a' B_ab u_b for pairs of sampled providers.
        for f in range(n_eff):
            rr = rr + (u[e] * a[f"zz_s{e}{f}"] * u[f]).sum(axis=-1)
    roles = stats.pair_roles
    if len(roles["ss"]):
        for e in range(n_eff):
            for f in range(n_eff):
                term = u[e][..., a["ss_a"]] * a[f"pair_ss{e}{f}"] * u[f][..., a["ss_b"]]
                rr = rr + 2.0 * term.sum(axis=-1)
    if len(roles["cs"]):
        factors, rows, cols = a["pair_cs_factor"], a["pair_cs_c"], a["pair_cs_s"]
        if xp is np:
            along = np.einsum("ke,...ke->...k", factors, u_sampled[..., cols, :])
            total = [np.asarray((factors[:, e] * along) @ stats.pair_scatter) for e in range(n_eff)]
        else:
            n_c = len(stats.collapsed_index)
            coupled = rank_one_scatter(u_sampled, factors, rows, cols, n_c)
            total = [coupled[:, e] for e in range(n_eff)]
        g = [g[e] - total[e] for e in range(n_eff)]
    return rr, g


def correlation_inverse(chol, n_eff: int) -> pt.TensorVariable:
    """:math:`R^{-1} = L^{-\\top} L^{-1}` of a small correlation Cholesky factor, elementwise."""
    inv = [[None] * n_eff for _ in range(n_eff)]
    for j in range(n_eff):
        inv[j][j] = 1.0 / chol[j, j]
        for i in range(j + 1, n_eff):
            inv[i][j] = -sum(chol[i, k] * inv[k][j] for k in range(j, i)) / chol[i, i]
    rows = []
    for a in range(n_eff):
        rows.append(
            pt.stack(
                [sum(inv[k][a] * inv[k][b] for k in range(max(a, b), n_eff)) for b in range(n_eff)]
            )
        )
    return pt.stack(rows)


def _cholesky(m, n_eff: int, sqrt):
    """Lower Cholesky factor of ``m`` (``m[i][j]``: arrays over providers), entry by entry."""
    chol = [[None] * n_eff for _ in range(n_eff)]
    for j in range(n_eff):
        chol[j][j] = sqrt(m[j][j] - sum((chol[j][k] ** 2 for k in range(j)), 0.0))
        for i in range(j + 1, n_eff):
            off = m[i][j] - sum((chol[i][k] * chol[j][k] for k in range(j)), 0.0)
            chol[i][j] = off / chol[j][j]
    return chol


def _forward(chol, b, n_eff: int) -> list:
    """Solve :math:`L v = b` entry by entry."""
    v: list = []
    for i in range(n_eff):
        v.append((b[i] - sum((chol[i][k] * v[k] for k in range(i)), 0.0)) / chol[i][i])
    return v


def _backward(chol, b, n_eff: int) -> list:
    """Solve :math:`L^\\top x = b` entry by entry."""
    x: list = [None] * n_eff
    for i in reversed(range(n_eff)):
        rest = sum((chol[k][i] * x[k] for k in range(i + 1, n_eff)), 0.0)
        x[i] = (b[i] - rest) / chol[i][i]
    return x


def _cholesky_terms(m, g, n_eff: int):
    """:math:`\\log|m|` and :math:`g^\\top m^{-1} g` per provider, ``m`` given entry by entry."""
    chol = _cholesky(m, n_eff, pt.sqrt)
    v = _forward(chol, g, n_eff)
    logdet = 2.0 * sum(pt.log(chol[j][j]) for j in range(n_eff))
    return logdet, sum(vi**2 for vi in v)


def collapsed_log_likelihood(
    stats: SufficientStatistics,
    theta: pt.TensorVariable,
    u_sampled: pt.TensorVariable | None,
    sigma: pt.TensorVariable,
    sigma_inv: pt.TensorVariable | None,
    logdet_sigma: pt.TensorVariable | None,
) -> pt.TensorVariable:
    r"""The exact :math:`\log p(y \mid \theta, u_{\mathcal S}, \sigma, \Sigma)` (module docstring).

    ``sigma_inv`` (provider_type, E, E) and ``logdet_sigma`` (provider_type,) are
    :math:`\Sigma_t^{-1}` and :math:`\log|\Sigma_t|`; all three provider arguments are ``None``
    when the model has no provider effects (then only :math:`r^\top r` is left).
    """
    rr, g = _residual_terms(stats, theta, u_sampled, pt)
    a = stats.shared
    s2 = sigma**2
    out = -0.5 * a["n"] * (_LOG_2PI + pt.log(s2)) - rr / (2.0 * s2)
    n_c = len(stats.collapsed_index)
    if stats.n_effects == 0 or not n_c:
        return out
    # Σ_t⁻¹ per collapsed provider through a one-hot product (a gather over providers would make
    # the gradient a scatter-add).
    n_eff = stats.n_effects
    m = [
        [s2 * pt.dot(a["onehot"], sigma_inv[:, i, j]) + a[f"zz_c{i}{j}"] for j in range(n_eff)]
        for i in range(n_eff)
    ]
    logdet_m, quad = _cholesky_terms(m, g, n_eff)
    logdet_prior = pt.dot(stats.type_counts.astype(float), logdet_sigma)
    per = -0.5 * logdet_prior - 0.5 * logdet_m.sum() + 0.5 * n_eff * n_c * pt.log(s2)
    return out + per + quad.sum() / (2.0 * s2)


#: Draws are processed in chunks of at most this many (draw × cell) values per array, so that
#: memory stays bounded however many clients share providers (a million clients: 150,000 pairs).
CHUNK_CELLS = 2**23


def _draw_chunks(n_draws: int, cells_per_draw: int):
    """Slices over draws, each holding at most :data:`CHUNK_CELLS` values of a per-draw array."""
    step = max(1, CHUNK_CELLS // max(1, cells_per_draw))
    return [slice(i, min(i + step, n_draws)) for i in range(0, n_draws, step)]


def draw_provider_effects(
    stats: SufficientStatistics,
    theta: np.ndarray,
    u_sampled: np.ndarray | None,
    sigma: np.ndarray,
    cov: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    r"""Every provider's effects, one exact draw per posterior draw: (draw, provider, E).

    Collapsed providers get :math:`u_c \sim \mathcal N(M_c^{-1} g_c, \sigma^2 M_c^{-1})`
    (``cov`` is :math:`\Sigma_t` per draw, (draw, provider_type, E, E)); sampled providers keep
    ``u_sampled`` (draw, S, E).
    """
    n_draws, n_eff = len(sigma), stats.n_effects
    out = np.zeros((n_draws, len(stats.sampled), n_eff))
    s_idx, c_idx = stats.sampled_index, stats.collapsed_index
    if len(s_idx):
        out[:, s_idx] = u_sampled
    types = stats.provider_type[c_idx]
    cells = (len(stats.arrays.get("pair_cs_factor", ())) + len(c_idx)) * n_eff
    for sl in _draw_chunks(n_draws, cells):
        us = u_sampled[sl] if len(s_idx) else None
        _, g = _residual_terms(stats, theta[sl], us, np)  # E arrays (d, C)
        s2 = sigma[sl, None] ** 2
        prec = np.linalg.inv(cov[sl])[:, types]  # (d, C, E, E)
        m = [
            [s2 * prec[..., i, j] + stats.zz[c_idx, i, j] for j in range(n_eff)]
            for i in range(n_eff)
        ]
        chol = _cholesky(m, n_eff, np.sqrt)
        # mean M⁻¹g = L⁻ᵀ L⁻¹ g; cov σ² M⁻¹ = σ² L⁻ᵀ L⁻¹, so σ L⁻ᵀ ε has it.
        noise = list(rng.standard_normal((n_eff, *g[0].shape)))
        mean = _backward(chol, _forward(chol, g, n_eff), n_eff)
        shift = _backward(chol, noise, n_eff)
        for e in range(n_eff):
            out[sl, c_idx, e] = mean[e] + sigma[sl, None] * shift[e]
    return out


def mean_moments(stats: SufficientStatistics, theta: np.ndarray, u: np.ndarray | None):
    r"""Per draw, the mean and variance over clients of :math:`\mu_i` (with every provider effect).

    :math:`\sum_i \mu_i = 1^\top X\theta + \sum_p \tilde z_p^\top u_p` and :math:`\sum_i \mu_i^2 =
    \theta^\top X^\top X\theta + 2 \sum_p u_p^\top \tilde Z_p^\top X \theta + \sum_p u_p^\top A_p
    u_p + 2 \sum_{(p,q)} u_p^\top B_{pq} u_q`, from the sufficient statistics alone (Bayesian
    :math:`R^2` without a draws × clients array).
    """
    total = theta @ stats.col_sum
    square = np.einsum("df,fg,dg->d", theta, stats.xtx, theta)
    if u is not None and stats.n_effects:
        n_eff = stats.n_effects
        total = total + u.reshape(len(u), -1) @ stats.z_sum.ravel()
        zx = stats.zx.reshape(-1, stats.zx.shape[-1])  # (P·E, F)
        for sl in _draw_chunks(len(u), zx.shape[0]):
            square[sl] += 2 * np.einsum(
                "dk,dk->d", u[sl].reshape(-1, zx.shape[0]), theta[sl] @ zx.T
            )
        for e in range(n_eff):
            for f in range(n_eff):
                square += (u[..., e] * u[..., f]) @ stats.zz[:, e, f]
        factors, block = rank_one_factors(stats.pair_zz)
        a, b = stats.pair[block, 0], stats.pair[block, 1]
        square += 2 * rank_one_pair_sums(np.ascontiguousarray(u), factors, a, b)
    mean = total / stats.n
    return mean, square / stats.n - mean**2


#: At most this many (draw × client) cells in the pointwise log-likelihood and in each
#: predictive group; above it they are computed for a random subset of clients (stated in the
#: groups' ``clients_of`` attribute and the report), so that the bundle stays bounded.
MAX_POINTWISE_CELLS = 25_000_000


def _flat(ds: xr.Dataset, name: str) -> np.ndarray:
    return _draws(ds, name, None, 0)


def theta_draws(spec: ModelSpec, ds: xr.Dataset) -> np.ndarray:
    """θ per draw, (draw, F), in the column order of :func:`fixed_design`."""
    parts = [
        _flat(ds, "alpha")[:, None],
        _flat(ds, "b_baseline")[:, None],
        _flat(ds, "b_covariate_z"),
    ]
    if spec.predictors.alliance == "composite":
        parts.append(_flat(ds, "b_alliance")[:, None])
    else:
        if spec.hierarchy.care_type_intercepts and "b_care" in ds:  # none for one care type
            parts.append(_flat(ds, "b_care"))
        b = _flat(ds, "b")
        parts.append(b.reshape(len(b), -1))
    return np.hstack(parts)


def _with_effects(spec, data, stats, ds: xr.Dataset, rng, *, from_prior: bool):
    """``ds`` with every provider's effects, ``r2_bayes`` and ``r2_marginal``; also (θ, σ, u)."""
    theta, sigma = theta_draws(spec, ds), _flat(ds, "sigma")
    shape = (ds.sizes["chain"], ds.sizes["draw"])
    u = None
    new: dict[str, tuple] = {}
    if stats.n_effects:
        cov = _population_cov(spec, ds, None, 0)
        us = _flat(ds, "u_provider_sampled") if stats.sampled.any() else None
        if from_prior:  # the collapsed providers' effects from their population distribution
            chol = np.linalg.cholesky(cov[:, stats.provider_type])  # (draw, provider, E, E)
            u = np.einsum("dpef,dpf->dpe", chol, rng.standard_normal(chol.shape[:-1]))
            if us is not None:
                u[:, stats.sampled] = us
        else:
            u = draw_provider_effects(stats, theta, us, sigma, cov, rng)
        new["u_provider"] = (("chain", "draw", "provider"), u[..., 0].reshape(*shape, -1))
        if spec.hierarchy.provider_slopes:
            slopes = u[..., 1:].reshape(*shape, u.shape[1], -1)
            new["u_provider_slope"] = (("chain", "draw", "provider", "subscale"), slopes)
    _, var = mean_moments(stats, theta, u)
    new["r2_bayes"] = (("chain", "draw"), (var / (var + sigma**2)).reshape(shape))
    if u is not None:  # r2_marginal as in graph.marginal_r2: fixed part over fixed + provider + σ²
        v_f = mean_moments(stats, theta, None)[1]
        v_u = mean_moments(stats, np.zeros_like(theta), u)[1]
        new["r2_marginal"] = (("chain", "draw"), (v_f / (v_f + v_u + sigma**2)).reshape(shape))
    coords = {"provider": data.coords()["provider"], "subscale": list(data.subscales)}
    used = {d for dims, _ in new.values() for d in dims}
    out = ds.assign(new).assign_coords({k: v for k, v in coords.items() if k in used})
    return out, theta, sigma, u


def _client_means(spec, data, keep, theta, u, n_eff) -> np.ndarray:
    """μ for the clients ``keep``, every draw: (draw, client)."""
    mu = theta @ fixed_design(spec, data)[keep].T
    if u is not None and n_eff:
        z = provider_design(data, n_eff)[keep]
        idx, w = data.membership_index[keep], data.membership_weight[keep]
        for k in range(idx.shape[1]):
            mu += w[:, k] * np.einsum("dne,ne->dn", u[:, idx[:, k]], z)
    return mu


def complete(
    spec: ModelSpec,
    data: ModelData,
    dt: xr.DataTree,
    seed: int,
    *,
    draws_only: bool = False,
    predictive_draws_per_chain: int = 250,
) -> xr.DataTree:
    """Everything a collapsed fit's bundle needs that sampling did not give (a no-op otherwise).

    Adds to the posterior (and the prior) every provider's effects (exact conditional draws),
    ``r2_bayes`` and ``r2_marginal`` (from the sufficient statistics); then, unless ``draws_only``, the pointwise
    log-likelihood ``y`` at every draw, the posterior predictive ``y`` (thinned to
    ``predictive_draws_per_chain`` draws per chain), the prior predictive ``y``, and the observed
    outcomes and baselines, for every client or, above :data:`MAX_POINTWISE_CELLS`, a random
    subset of clients (the groups' ``clients_of`` attribute gives the study's number).
    """
    if not is_collapsed(spec):
        return dt
    rng = np.random.default_rng([int(seed), 20221013])
    stats = sufficient_statistics(spec, data)
    n_eff = stats.n_effects
    post, theta, sigma, u = _with_effects(
        spec, data, stats, dt["posterior"].to_dataset(), rng, from_prior=False
    )
    dt["posterior"] = post.assign_attrs(
        likelihood_form="collapsed", sampled_providers=int(stats.sampled.sum())
    )
    prior = None
    if "prior" in dt.children:
        prior, p_theta, p_sigma, p_u = _with_effects(
            spec, data, stats, dt["prior"].to_dataset(), rng, from_prior=True
        )
        dt["prior"] = prior
    if draws_only:
        return dt
    n, n_draws = data.n_clients, len(sigma)
    keep = np.arange(n)
    if n * n_draws > MAX_POINTWISE_CELLS:
        keep = np.sort(rng.choice(n, size=max(1, MAX_POINTWISE_CELLS // n_draws), replace=False))
    labels = np.asarray(data.coords()["client"])[keep]
    attrs = {"clients_of": n, "clients_kept": len(keep)}
    chains, draws = post.sizes["chain"], post.sizes["draw"]
    mu = _client_means(spec, data, keep, theta, u, n_eff)
    y = data.y[keep]
    loglik = _log_density(spec, y[None], mu, sigma[:, None], None)
    client = {"client": labels}
    dt["log_likelihood"] = xr.Dataset(
        {"y": (("chain", "draw", "client"), loglik.reshape(chains, draws, -1).astype("float32"))},
        coords=client,
        attrs=attrs,
    )
    thin = max(1, draws // predictive_draws_per_chain)
    picked = mu.reshape(chains, draws, -1)[:, ::thin]
    scale = sigma.reshape(chains, draws)[:, ::thin, None]
    y_rep = picked + scale * rng.standard_normal(picked.shape)
    dt["posterior_predictive"] = xr.Dataset(
        {"y": (("chain", "draw", "client"), y_rep)},
        coords={**client, "draw": post["draw"].values[::thin]},
        attrs=attrs,
    )
    if prior is not None:
        p_mu = _client_means(spec, data, keep, p_theta, p_u, n_eff)
        p_rep = p_mu + p_sigma[:, None] * rng.standard_normal(p_mu.shape)
        dt["prior_predictive"] = xr.Dataset(
            {"y": (("chain", "draw", "client"), p_rep.reshape(*prior["sigma"].shape, -1))},
            coords=client,
            attrs=attrs,
        )
    dt["observed_data"] = xr.Dataset({"y": (("client",), y)}, coords=client, attrs=attrs)
    constant = dt["constant_data"].to_dataset() if "constant_data" in dt.children else xr.Dataset()
    dt["constant_data"] = constant.assign(
        baseline=(("client",), data.baseline[keep])
    ).assign_coords(client)
    return dt

"""Published results that a spec can be set beside (``published_table = "<key>"`` in its TOML).

Each entry is a table as printed in the paper: per predictor the unstandardised coefficient ``b``,
the standardised ``beta`` (per SD of the predictor and of the outcome) and the 95% confidence
interval, keyed by the estimand name the package gives the same quantity, plus the model's R².
"""

from __future__ import annotations

__all__ = ["COMPANION_WHO5_CHANGE", "PUBLISHED", "PUBLISHED_ALLIANCE_MEDIAN"]

PUBLISHED: dict[str, dict] = {
    "sagui_henson_2022_table2": {
        "citation": (
            "Sagui-Henson et al. (2022), J. Technol. Behav. Sci. 7(4), 439–450, Table 2 "
            "(OLS, n = 675), doi:10.1007/s41347-022-00263-5"
        ),
        "rows": [
            # estimand, label, b, beta, ci_low, ci_high
            ("intercept", "intercept", 12.60, None, 1.15, 24.06),
            ("b_age", "age (years)", 0.03, 0.01, -0.13, 0.19),
            ("b_male", "sex (male vs female)", 0.04, 0.002, -2.91, 2.99),
            ("b_days_in_care", "time in care (days)", -0.01, -0.03, -0.03, 0.01),
            ("b_baseline", "baseline WHO-5", 0.66, 0.23, 0.45, 0.86),
            ("b_alliance", "alliance score (goal+bond mean)", 2.04, 0.08, 0.09, 3.99),
        ],
        "r2": 0.06,
    },
}

#: The abstract's median client alliance score (goal and bond averaged over sessions, 1–5).
PUBLISHED_ALLIANCE_MEDIAN = 4.8

#: Change among the elevated on the same platform and period, a different sample (context only).
COMPANION_WHO5_CHANGE = (
    "Prescott et al. (2022), PLoS ONE 17(8):e0272162 (same platform and period, N = 1,852 with "
    "elevated symptoms; a different sample): WHO-5 gain +10.1 (95% CI 9.3–10.9), d = 0.73"
)

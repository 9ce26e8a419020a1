"""Solvers behind the LASSO meta models: numpy and numba only, no scikit-learn estimators.

* L1-penalised logistic regression: proximal Newton with coordinate descent on the quadratic
  model (as in glmnet), warm-started along a decreasing path of strengths
  (:func:`_l1_logistic_fit`, :func:`_l1_logistic_path`, :func:`_logit_lambda_max`);
* L1-penalised least squares (scikit-learn's ``Lasso`` objective) along a path
  (:func:`_lasso_path`);
* the shared coordinate-descent kernel :func:`_cd_quadratic` and the log-spaced strength grid
  :func:`_lambda_grid`.

All coefficient vectors hold the intercept first.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from scipy.special import expit

# Internal to the meta-model modules: nothing here is public API.
__all__: list[str] = []


@njit(cache=True, nogil=True)
def _cd_quadratic(H, c, beta, lam, tol, max_sweeps):
    """Minimise 0.5 b'Hb - c'b + lam * sum_{j>=1} |b_j| by cyclic coordinate descent.

    Coordinate 0 is the intercept and is not penalised. ``beta`` is updated in place.
    """
    p = beta.shape[0]
    Hb = np.zeros(p)
    for j in range(p):
        for k in range(p):
            Hb[j] += H[j, k] * beta[k]
    for _ in range(max_sweeps):
        max_change = 0.0
        for j in range(p):
            hjj = H[j, j]
            if hjj <= 0.0:
                continue
            old = beta[j]
            r = c[j] - Hb[j] + hjj * old
            if j == 0:
                new = r / hjj
            elif r > lam:
                new = (r - lam) / hjj
            elif r < -lam:
                new = (r + lam) / hjj
            else:
                new = 0.0
            d = new - old
            if d != 0.0:
                beta[j] = new
                for k in range(p):
                    Hb[k] += H[k, j] * d
                change = abs(d) * math.sqrt(hjj)
                if change > max_change:
                    max_change = change
        if max_change < tol:
            break
    return beta


def _logistic_objective(eta, y, beta, lam):
    return float(np.mean(np.logaddexp(0.0, eta) - y * eta) + lam * np.abs(beta[1:]).sum())


def _l1_logistic_fit(Z1, y, lam, beta, *, tol=1e-10, max_iter=100):
    """Minimise mean log-loss + lam * ||b||_1 (intercept free); Z1 has a leading column of ones.

    Proximal Newton: each step minimises the penalised quadratic model of the loss by
    coordinate descent, followed by a backtracking line search on the true objective.
    """
    n = Z1.shape[0]
    beta = np.array(beta, dtype=np.float64)
    eta = Z1 @ beta
    f = _logistic_objective(eta, y, beta, lam)
    for _ in range(max_iter):
        prob = expit(eta)
        g = Z1.T @ (prob - y) / n
        # A'A with A = sqrt(w) Z1 is a symmetric rank-k update, several times faster than Z1'WZ1.
        A = Z1 * np.sqrt(np.maximum(prob * (1.0 - prob), 1e-10))[:, None]
        H = A.T @ A / n
        c = H @ beta - g
        new = _cd_quadratic(H, c, beta.copy(), lam, 1e-9, 2000)
        d = new - beta
        decrease = float(g @ d + lam * (np.abs(new[1:]).sum() - np.abs(beta[1:]).sum()))
        if decrease > -tol:
            break
        step = 1.0
        Zd = Z1 @ d
        while True:
            cand = beta + step * d
            eta_c = eta + step * Zd
            f_c = _logistic_objective(eta_c, y, cand, lam)
            if f_c <= f + 0.25 * step * decrease or step < 1e-8:
                break
            step *= 0.5
        if step < 1e-8:
            break
        beta, eta, f = cand, eta_c, f_c
    return beta


def _logit_lambda_max(Z, y):
    """Smallest lambda at which every L1 logistic coefficient is 0 (intercept-only model)."""
    return float(np.max(np.abs(Z.T @ (y - y.mean())) / Z.shape[0])) if Z.shape[1] else 0.0


def _l1_logistic_path(Z, y, lambdas):
    """Coefficients (intercept first) along decreasing ``lambdas``, warm-started."""
    Z1 = np.column_stack([np.ones(Z.shape[0]), Z])
    beta = np.zeros(Z1.shape[1])
    ybar = float(np.clip(y.mean(), 1e-12, 1 - 1e-12))
    beta[0] = math.log(ybar / (1 - ybar))
    out = []
    for lam in lambdas:
        beta = _l1_logistic_fit(Z1, y, lam, beta)
        out.append(beta.copy())
    return out, Z1


def _lasso_path(Z, y, alphas):
    """Least squares + alpha * ||b||_1 (scikit-learn's Lasso objective), intercept first.

    One Gram matrix for the whole path, then coordinate descent warm-started along it.
    """
    n = Z.shape[0]
    Z1 = np.column_stack([np.ones(n), Z])
    H = Z1.T @ Z1 / n
    c = Z1.T @ y / n
    beta = np.zeros(Z1.shape[1])
    beta[0] = float(y.mean())
    out = []
    for a in alphas:
        beta = _cd_quadratic(H, c, beta.copy(), float(a), 1e-10, 100000)
        out.append(beta.copy())
    return out


def _lambda_grid(lam_max, n, ratio):
    if lam_max <= 0:
        return np.array([0.0])
    return lam_max * np.logspace(0.0, math.log10(ratio), n)


def _mean_log_loss(y, raw):
    return float(np.mean(np.logaddexp(0.0, raw) - y * raw))

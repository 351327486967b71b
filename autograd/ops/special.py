"""Special functions NumPy lacks: the error function, for the exact GELU.

``erf`` follows W. J. Cody, "Rational Chebyshev approximations for the error
function", Math. Comp. 23 (1969) 631-637, with the coefficients of his SPECFUN
routine CALERF (netlib.org/specfun/erf): three rational functions, each good to
about 1e-18 on its interval, so the float64 result is within rounding of the true
value (checked against ``math.erf`` to 1e-14 in the tests). Evaluated in the
input's own dtype, so float32 stays float32 and costs half as much. On a GPU the
CuPy array goes to ``cupyx.scipy.special.erf`` instead.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module

__all__ = ["erf"]

# Cody's three intervals of |x| and, for each, numerator coefficients (the leading
# one last, as CALERF stores them) and the monic denominator's.
_SMALL, _LARGE = 0.46875, 4.0
_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
      3.20937758913846947e03, 1.85777706184603153e-1)
_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
      2.84423683343917062e03)
_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
      2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
      2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
      1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
      3.43936767414372164e03, 1.23033935480374942e03)
_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
      1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_Q = (2.56852019228982242e00, 1.87295284992346047e00, 5.27905102951428412e-1,
      6.05183413124413191e-2, 2.33520497626869185e-3)
_RSQRT_PI = 5.6418958354775628695e-1  # 1 / sqrt(pi)
_HUGE = 32.0  # erfc(32) ~ 1e-447 is below every float; clamping there keeps y^2 finite

# Elements per block: the ~60 elementwise passes of the three rational functions
# then run over a few temporaries that stay in the CPU cache, about twice as fast
# as whole-array passes on activations of tens of megabytes.
_BLOCK = 1 << 15


def _rational(t, num, den):
    """Cody's ratio (num[-1] t^n + num[0] t^(n-1) + ... + num[-2]) / (t^n + den[0] t^(n-1) + ... + den[-1]).

    Horner's rule, in place on two temporaries.
    """
    p = t * num[-1]
    p += num[0]
    for c in num[1:-1]:
        p *= t
        p += c
    q = t + den[0]
    for c in den[1:]:
        q *= t
        q += c
    p /= q
    return p


def _neg_exp_square(y):
    """exp(-y^2)."""
    e = y * y
    np.negative(e, out=e)
    return np.exp(e, out=e)


def _erf_block(x):
    """erf of a 1-D block: every interval's formula on |x| clamped into that interval, then a select.

    Clamping keeps each formula on its own interval (no overflow, no division by
    zero) and replaces per-element branches with whole-block arithmetic; NaN passes
    through every formula and comes out NaN.
    """
    y = np.abs(x)
    # |x| <= 0.46875: erf(y) = y R1(y^2)
    lo = np.minimum(y, _SMALL)
    small = _rational(lo * lo, _A, _B)
    small *= lo
    # 0.46875 < |x| <= 4: erfc(y) = exp(-y^2) R2(y). Only 1 - erfc is wanted, whose
    # absolute error is erfc's, so the exp(-y^2) splitting CALERF does for erfc's
    # relative accuracy is not needed.
    mid = np.clip(y, _SMALL, _LARGE)
    out = _rational(mid, _C, _D)
    out *= _neg_exp_square(mid)
    np.subtract(1.0, out, out=out)
    # |x| > 4: erfc(y) = exp(-y^2) / y (1/sqrt(pi) - y^-2 R3(y^-2)); in float32 erf is
    # already +-1 here, and most blocks of activations have no such element.
    large = y > _LARGE
    if large.any():
        hi = np.clip(y, _LARGE, _HUGE)
        t = hi * hi
        np.reciprocal(t, out=t)
        tail = _rational(t, _P, _Q)
        tail *= t
        np.subtract(_RSQRT_PI, tail, out=tail)
        tail /= hi
        tail *= _neg_exp_square(hi)
        np.subtract(1.0, tail, out=tail)
        out = np.where(large, tail, out)
    out = np.where(y <= _SMALL, small, out)
    return np.copysign(out, x, out=out)  # erf is odd


def erf(x):
    """The error function 2/sqrt(pi) * integral_0^x exp(-t^2) dt, elementwise (float64 to ~1e-16)."""
    xp = get_array_module(x)
    if xp is not np:
        from cupyx.scipy.special import erf as gpu_erf

        return gpu_erf(x)
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    out = np.empty(x.shape, dtype=x.dtype)  # C order, so that its reshape(-1) is a view
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    for start in range(0, x.size, _BLOCK):
        block = slice(start, start + _BLOCK)
        flat_out[block] = _erf_block(flat_x[block])
    return out

"""Special functions (autograd/ops/special.py): erf and the normal CDF against math.erf, in float64
and float32."""
import math

import numpy as np

from autograd.ops.special import erf, normal_cdf


def test_erf_matches_math_erf_to_1e_14():
    edges = np.array([0.46875, 4.0, 32.0])
    points = np.concatenate([
        np.linspace(-6.0, 6.0, 48001),  # more than one block of the blocked evaluation
        np.nextafter(edges, 0.0), edges, np.nextafter(edges, np.inf),
        np.geomspace(1e-300, 1e-3, 200),
        np.geomspace(6.0, 40.0, 50),
        [0.0, 5e-324, 1e300],
    ])
    points = np.concatenate([points, -points])
    ref = np.array([math.erf(x) for x in points])
    np.testing.assert_allclose(erf(points), ref, rtol=1e-14, atol=0)


def test_erf_special_values_and_shapes():
    out = erf(np.array([np.inf, -np.inf, np.nan, -0.0]))
    assert out[0] == 1.0 and out[1] == -1.0 and np.isnan(out[2])
    assert out[3] == 0.0 and np.signbit(out[3])  # odd, down to the sign of zero
    grid = np.linspace(-3, 3, 12).reshape(3, 4)
    np.testing.assert_allclose(erf(grid.T), [[math.erf(x) for x in row] for row in grid.T], rtol=1e-14)
    assert erf(np.arange(3)).dtype == np.float64
    assert erf(np.zeros((2, 0))).shape == (2, 0)


def test_erf_float32_stays_float32_and_is_within_8_ulp():
    x = np.concatenate([np.linspace(-6, 6, 4001), np.geomspace(1e-30, 1e-2, 50)]).astype(np.float32)
    x = np.concatenate([x, -x, np.nextafter(np.float32(4), np.float32(0))[None]])
    out = erf(x)
    assert out.dtype == np.float32
    ref = np.array([math.erf(float(v)) for v in x])
    ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(out - ref) <= 8 * ulp)
    assert np.all(np.abs(out) <= 1)
    assert erf(np.float16([0.5])).dtype == np.float16


def test_normal_cdf_matches_math_erf():
    x = np.concatenate([np.linspace(-9, 9, 4001), np.geomspace(1e-30, 1e-2, 30)])
    x = np.concatenate([x, -x, [0.0, np.inf, -np.inf]])
    ref = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(normal_cdf(x), ref, rtol=1e-14, atol=1e-16)
    x32 = x.astype(np.float32)
    got = normal_cdf(x32)
    assert got.dtype == np.float32 and got.min() >= 0 and got.max() <= 1
    ref32 = np.array([0.5 * (1 + math.erf(float(v) / math.sqrt(2))) for v in x32])
    np.testing.assert_allclose(got, ref32, rtol=0, atol=3e-7)  # absolute: 1/2 + x A/B cancels in the left tail
    np.testing.assert_array_equal(normal_cdf(x32, x32 * x32), got)
    assert np.isnan(normal_cdf(np.float32([np.nan]))).all()

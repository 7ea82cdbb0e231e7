#!/usr/bin/env python3
"""Fits the polynomials of graft's vectorized erf (crates/graft-kernels/src/math.rs) and checks
them in emulated f32 against mpmath. Needs numpy and mpmath.

  erf(x) = x·(A0 + x²·A(x²))                 for |x| < 0.75
  erf(x) = 1 − e^(−x²)·B(t), t = (1/|x| − c)/h  for 0.75 ≤ |x| < 3.92, c and h mapping [0.75, 3.92]
  erf(x) = ±1                                  beyond
"""
import mpmath as mp
import numpy as np

mp.mp.dps = 30
SPLIT, ONE = 0.75, 3.92
f = np.float32


def weighted_fit(t, y, degree):
    vander = np.vander(t, degree + 1, increasing=True)
    coefficients, *_ = np.linalg.lstsq(vander / y[:, None], np.ones_like(y), rcond=None)
    return coefficients


def chebyshev_points(lo, hi, n):
    return np.cos(np.linspace(0, np.pi, n)) * (hi - lo) / 2 + (hi + lo) / 2


xs = np.sqrt(chebyshev_points(0, SPLIT ** 2, 3000) + 1e-30)
small = weighted_fit(xs ** 2, np.array([float(mp.erf(v)) for v in xs]) / xs, 6)
u_lo, u_hi = 1 / ONE, 1 / SPLIT
centre, half_width = (u_lo + u_hi) / 2, (u_hi - u_lo) / 2
xb = chebyshev_points(SPLIT, ONE, 4000)
scaled = np.array([float(mp.erfc(v) * mp.exp(mp.mpf(v) ** 2)) for v in xb])
large = weighted_fit((1 / xb - centre) / half_width, scaled, 10)


def horner(coefficients, v):
    acc = f(coefficients[-1])
    for c in coefficients[-2::-1]:
        acc = f(f(acc * v) + f(c))
    return acc


def erf32(x):
    x = f(x)
    a = abs(x)
    if a < SPLIT:
        x2 = f(x * x)
        return f(np.float64(x) * np.float64(f(small[0])) + np.float64(f(f(x * x2) * horner(small[1:], x2))))
    if a >= ONE:
        return f(np.sign(x))
    t = f(f(f(1) / a - f(centre)) * f(1 / half_width))
    tail = f(np.exp(f(-f(a * a)), dtype=np.float32) * horner(large, t))
    return f(np.sign(x) * f(1 - tail))


print("small:", [float(f(c)) for c in small])
print("large:", [float(f(c)) for c in large])
print("centre, half width:", float(f(centre)), float(f(half_width)))
grid = np.linspace(-5, 5, 70001).astype(np.float32)
print("max abs error (emulated f32, two roundings per step):",
      max(abs(float(erf32(v)) - float(mp.erf(mp.mpf(float(v))))) for v in grid))

"""Deterministic, tile-independent random fields for the synthetic slides.

Everything is a pure function of integer lattice coordinates and a key (an integer hash), so a
tile can be rendered on its own and still join its neighbours seamlessly, in bounded memory.

- :func:`hash_u01`: uniform numbers in [0, 1) from (ix, iy, key) integer arrays.
- :func:`value_noise_points`: smooth value noise in [-1, 1] at arbitrary points.
- :func:`value_noise_grid`: the same noise on a regular pixel grid, computed as
  ``Wy @ lattice @ Wx.T`` (two small matrix products; no per-pixel hashing).
- :func:`bilinear_matrix`: the interpolation matrix used for grids (also to upsample a coarse
  lattice of any smooth field onto a tile).
"""

from __future__ import annotations

import math

import numpy as np

_M1 = np.uint32(0x8DA6B343)
_M2 = np.uint32(0xD8163841)
_A1 = np.uint32(0x7FEB352D)
_A2 = np.uint32(0x846CA68B)


def mix_key(*parts: int) -> int:
    """Combine integers into one 32-bit key (deterministic, platform independent)."""
    h = 0x9E3779B9
    for p in parts:
        h ^= (int(p) & 0xFFFFFFFF) + 0x9E3779B9 + ((h << 6) & 0xFFFFFFFF) + (h >> 2)
        h &= 0xFFFFFFFF
        h = ((h ^ (h >> 16)) * 0x7FEB352D) & 0xFFFFFFFF
        h = ((h ^ (h >> 15)) * 0x846CA68B) & 0xFFFFFFFF
        h ^= h >> 16
    return h


def _u32(a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == np.uint32:
        return a
    return a.astype(np.int64).astype(np.uint32)


def coord_base(ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    """The key-independent part of the coordinate hash (reuse it to draw several channels)."""
    with np.errstate(over="ignore"):
        return (_u32(ix) * _M1) ^ (_u32(iy) * _M2)


def finish_u01(base: np.ndarray, key) -> np.ndarray:
    """Uniform float32 numbers in [0, 1) from a :func:`coord_base` and a key (or an array of keys)."""
    with np.errstate(over="ignore"):
        if np.isscalar(key):
            kk = np.uint32((int(key) * 0xCB1AB31F) & 0xFFFFFFFF)
        else:
            kk = np.asarray([(int(k) * 0xCB1AB31F) & 0xFFFFFFFF for k in key], np.uint32)[:, None]
        h = base ^ kk
        h ^= h >> np.uint32(16)
        h *= _A1
        h ^= h >> np.uint32(15)
        h *= _A2
        h ^= h >> np.uint32(16)
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def hash_u01(ix: np.ndarray, iy: np.ndarray, key: int) -> np.ndarray:
    """Uniform float32 numbers in [0, 1) from integer coordinate arrays (broadcast) and a key."""
    return finish_u01(coord_base(ix, iy), key)


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def value_noise_points(x: np.ndarray, y: np.ndarray, period: float, key: int) -> np.ndarray:
    """Smooth value noise in [-1, 1] at points (x, y), lattice spacing ``period`` (same units)."""
    gx = np.asarray(x, np.float64) / period
    gy = np.asarray(y, np.float64) / period
    ix = np.floor(gx)
    iy = np.floor(gy)
    fx = _fade(gx - ix).astype(np.float32)
    fy = _fade(gy - iy).astype(np.float32)
    ix = ix.astype(np.int64)
    iy = iy.astype(np.int64)
    v00 = hash_u01(ix, iy, key)
    v10 = hash_u01(ix + 1, iy, key)
    v01 = hash_u01(ix, iy + 1, key)
    v11 = hash_u01(ix + 1, iy + 1, key)
    top = v00 + (v10 - v00) * fx
    bot = v01 + (v11 - v01) * fx
    return (top + (bot - top) * fy) * 2.0 - 1.0


def fbm_points(x: np.ndarray, y: np.ndarray, period: float, key: int, octaves: int = 3) -> np.ndarray:
    """Fractal sum of value noise (periods halve, amplitudes halve), roughly in [-1, 1]."""
    out = np.zeros(np.broadcast(np.asarray(x), np.asarray(y)).shape, np.float32)
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        out += amp * value_noise_points(x, y, period / (2**o), key + 7919 * o)
        norm += amp
        amp *= 0.5
    return out / norm


def bilinear_matrix(coords: np.ndarray, period: float, smooth: bool = True) -> tuple[np.ndarray, int]:
    """Interpolation weights of 1-D ``coords`` onto lattice nodes ``k * period``.

    Returns ``(W, k0)``: ``W[i, j]`` is the weight of node ``k0 + j`` for coordinate ``i``
    (a hat function of the distance to the node, smoothed with the fade curve if ``smooth``).
    """
    g = np.asarray(coords, np.float64) / period
    k0 = math.floor(float(g.min()))
    n = math.floor(float(g.max())) - k0 + 2
    t = (g - k0).astype(np.float32)[:, None] - np.arange(n, dtype=np.float32)[None, :]
    w = 1.0 - np.abs(t)
    np.maximum(w, 0.0, out=w)
    if smooth:
        w = w * w * (3.0 - 2.0 * w)
    return w, k0


def value_noise_grid(xs: np.ndarray, ys: np.ndarray, period: float, key: int) -> np.ndarray:
    """Value noise in [-1, 1] on the grid ``ys x xs`` (1-D coordinate arrays), shape (len(ys), len(xs))."""
    wx, kx = bilinear_matrix(xs, period)
    wy, ky = bilinear_matrix(ys, period)
    lx = np.arange(kx, kx + wx.shape[1])
    ly = np.arange(ky, ky + wy.shape[1])
    lattice = hash_u01(lx[None, :], ly[:, None], key) * 2.0 - 1.0
    return wy @ lattice @ wx.T


def fbm_grid(
    xs: np.ndarray, ys: np.ndarray, period: float, key: int, octaves: int = 3, min_period: float = 0.0
) -> np.ndarray:
    """Fractal value noise on a grid; octaves with a period below ``min_period`` are skipped."""
    out = np.zeros((len(ys), len(xs)), np.float32)
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        p = period / (2**o)
        if p < min_period:
            break
        out += amp * value_noise_grid(xs, ys, p, key + 7919 * o)
        norm += amp
        amp *= 0.5
    return out / max(norm, 1e-6)

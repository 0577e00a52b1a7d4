"""The scene of one synthetic slide: appearance parameters and smooth fields, in microns.

A :class:`Scene` is built from a :class:`~fiveflow.cohort.demo.DemoCase` and the slide's size.
It holds only O(1) state (stain vectors, a handful of tissue blobs, vessels, artefacts); every
spatially varying quantity is a pure function of position (:mod:`fiveflow.cohort.noise`), so
:mod:`fiveflow.cohort.render` can draw any tile at any pyramid level independently.

Smooth fields (:meth:`Scene.fields`), all at positions in microns:

- ``tis``: tissue value minus its threshold (> 0 inside tissue; threshold calibrated so the
  tissue covers a drawn fraction of the slide, 38-55 %).
- ``nrm``: fraction of non-tumour lung (alveolar parenchyma), 0..1.
- ``arch``: architecture field in [-1, 1] (squamous nests / solid adenocarcinoma areas).
- ``mod``: slow stain-intensity modulation around 1.
- ``pleura``/``wall``: membership (0..1) of the pleural band and of the chest-wall (skeletal
  muscle) band at the tissue edge; present only when the report states the attribute.
- ``mim``: 1 where tumour is drawn with the other class's morphology (``Difficulty.overlap``), else 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..settings import default, with_defaults
from .noise import fbm_grid, fbm_points, mix_key

if TYPE_CHECKING:  # pragma: no cover
    from .demo import DemoCase

GRADE_INDEX = {
    "well": 0,
    "moderate": 1,
    "moderate_to_poor": 2,
    "poor": 3,
    "unknown": 1,
    "mixed": 2,
    "undifferentiated": 3,
}

# Optical densities (per unit stain amount) in RGB, natural log; rows are normalised.
H_OD = np.array([0.65, 0.70, 0.29])
E_OD = np.array([0.22, 0.80, 0.56])
R_OD = np.array([0.06, 0.80, 0.60])  # red blood cells / orange keratin
D_OD = np.array([0.58, 0.58, 0.58])  # anthracotic pigment
PEN_OD = {
    "green": np.array([0.95, 0.25, 0.75]),
    "blue": np.array([0.95, 0.60, 0.10]),
    "black": np.array([0.70, 0.70, 0.70]),
}


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _is_grid(x: np.ndarray, y: np.ndarray) -> bool:
    return x.ndim == 2 and y.ndim == 2 and x.shape[0] == 1 and y.shape[1] == 1


def _fbm(x: np.ndarray, y: np.ndarray, period: float, key: int, octaves: int) -> np.ndarray:
    """fbm at points, or on a grid (x: 1 x n, y: m x 1) with two matrix products per octave."""
    if _is_grid(x, y):
        return fbm_grid(x[0], y[:, 0], period, key, octaves)
    return fbm_points(x, y, period, key, octaves)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


@dataclass(frozen=True)
class Difficulty:
    """How much class signal the pixels carry (``cohort.demo.difficulty``); the defaults are the demo's.

    ``normal_lung``: the (low, high) range from which each slide's share of tissue that is non-tumour lung
    is drawn (uniform); the rest is tumour, which alone shows the class. Alveolar lung is lacy, so much of it
    falls out of the tissue mask: the tiles stay mostly tumour whatever this share (a weak knob).
    ``overlap``: the (low, high) range of each slide's share of tumour drawn with the OTHER class's morphology
    (squamous nests and keratin in an adenocarcinoma, glands in a squamous carcinoma: the mixed and
    ambiguous areas real NSCLC has), in patches of a few hundred microns; (0, 0) = none. ``stain_jitter``: scale of the
    per-slide stain variation (haematoxylin/eosin hue and intensity, the same for both classes: colour alone
    says nothing about class, but it adds between-slide variation a classifier must see through); 0 = every
    slide the same stain."""

    normal_lung: tuple[float, float] = tuple(default("cohort.demo.difficulty.normal_lung"))
    stain_jitter: float = default("cohort.demo.difficulty.stain_jitter")
    overlap: tuple[float, float] = tuple(default("cohort.demo.difficulty.overlap"))

    @classmethod
    def from_config(cls, d: dict | None) -> Difficulty:
        d = dict(d or {})
        unknown = set(d) - {"normal_lung", "stain_jitter", "overlap"}
        if unknown:
            raise ValueError(
                f"cohort.demo.difficulty: unknown keys {sorted(unknown)} (normal_lung, stain_jitter, overlap)"
            )
        d = with_defaults(d, "cohort.demo.difficulty")
        olo, ohi = (float(v) for v in d["overlap"])
        if not 0.0 <= olo <= ohi <= 0.5:
            raise ValueError(
                f"cohort.demo.difficulty.overlap must be [low, high] with 0 <= low <= high <= 0.5 "
                f"(got {[olo, ohi]}; above 0.5 the other class's morphology would dominate)"
            )
        lo, hi = (float(v) for v in d["normal_lung"])
        jitter = float(d["stain_jitter"])
        if not 0.0 <= lo <= hi < 1.0:
            raise ValueError(
                f"cohort.demo.difficulty.normal_lung must be [low, high] with 0 <= low <= high < 1 (got {[lo, hi]})"
            )
        if not 0.0 <= jitter <= 4.0:
            raise ValueError(f"cohort.demo.difficulty.stain_jitter must be in [0, 4] (got {jitter})")
        return cls((lo, hi), jitter, (olo, ohi))


@dataclass(frozen=True)
class Style:
    """Per-slide appearance parameters (drawn from the case's seed; class-specific morphology)."""

    label: str
    grade: int  # 0 well .. 3 poor
    od: np.ndarray  # 4 x 3 optical densities: H, E, R, D (stain jitter applied)
    glass: np.ndarray  # background RGB (0..255)
    stroma_e: float
    stroma_h: float
    lymph: float  # lymphocyte density factor
    # squamous (LUSC)
    cell_spacing: float
    nuc_radius: float
    pleomorphism: float
    cyto_e: float
    pearl_spacing: float
    pearl_p: float
    pearl_radius: tuple[float, float]
    keratin_p: float
    nest_thr: float
    # glandular (LUAD)
    gland_spacing: float
    gland_p: float
    lumen_radius: tuple[float, float]
    gland_irregular: float
    epi_thickness: float
    solid_thr: float
    stray_p: float

    @property
    def is_lusc(self) -> bool:
        return self.label == "LUSC"


def make_style(case: DemoCase, rng: np.random.Generator, stain_jitter: float = 1.0) -> Style:
    g = GRADE_INDEX.get(case.differentiation, 1)
    # stain jitter: the same ranges for both classes, so colour alone says nothing about class
    j = float(stain_jitter)
    h = _unit(H_OD + rng.normal(0, 0.05 * j, 3).clip(-0.1 * j, 0.1 * j)) * rng.uniform(1 - 0.25 * j, 1 + 0.25 * j)
    e = _unit(E_OD + rng.normal(0, 0.06 * j, 3).clip(-0.12 * j, 0.12 * j)) * rng.uniform(1 - 0.25 * j, 1 + 0.25 * j)
    od = np.stack([h, e, _unit(R_OD) * 1.1, _unit(D_OD)]).astype(np.float32)
    glass = np.array([243, 242, 244], float) + rng.uniform(-3, 2, 3)
    return Style(
        label=case.label,
        grade=g,
        od=od,
        glass=glass,
        stroma_e=rng.uniform(0.40, 0.60),
        stroma_h=rng.uniform(0.05, 0.10),
        lymph=rng.uniform(0.2, 1.0),
        cell_spacing=rng.uniform(19.0, 23.0) - 1.0 * g,
        nuc_radius=rng.uniform(3.6, 4.4) * (1 + 0.08 * g),
        pleomorphism=0.08 + 0.07 * g,
        cyto_e=rng.uniform(0.80, 1.0),
        pearl_spacing=(230.0, 290.0, 370.0, 480.0)[g] * rng.uniform(0.9, 1.1),
        pearl_p=(0.85, 0.65, 0.40, 0.22)[g],
        pearl_radius=((32.0, 60.0), (28.0, 52.0), (22.0, 42.0), (18.0, 34.0))[g],
        keratin_p=(0.12, 0.07, 0.03, 0.01)[g],
        nest_thr=rng.uniform(-0.35, -0.2),
        gland_spacing=(115.0, 98.0, 84.0, 74.0)[g] * rng.uniform(0.92, 1.08),
        gland_p=(0.92, 0.85, 0.72, 0.58)[g],
        lumen_radius=((20.0, 34.0), (15.0, 28.0), (10.0, 21.0), (6.0, 15.0))[g],
        gland_irregular=(0.08, 0.16, 0.3, 0.45)[g],
        epi_thickness=rng.uniform(12.0, 16.0),
        solid_thr=(0.75, 0.45, 0.25, 0.08)[g],
        stray_p=(0.02, 0.05, 0.12, 0.22)[g],
    )


@dataclass(frozen=True)
class Vessel:
    x: float
    y: float
    radius: float
    wall: float
    invaded: bool


@dataclass(frozen=True)
class Band:
    """A band along the tissue edge inside an angular sector around the main tissue blob."""

    kind: str  # "pleura" | "wall"
    angle0: float
    width_angle: float
    width: float  # band width in microns
    invaded: bool


class Scene:
    """Everything about one slide except pixels (see module docstring)."""

    def __init__(
        self, case: DemoCase, width: int, height: int, mpp: float, difficulty: Difficulty | dict | None = None
    ):
        self.case = case
        self.difficulty = difficulty if isinstance(difficulty, Difficulty) else Difficulty.from_config(difficulty)
        self.width, self.height, self.mpp = int(width), int(height), float(mpp)
        self.wu, self.hu = self.width * self.mpp, self.height * self.mpp  # microns
        rng = np.random.default_rng([case.seed, 0xC0FFEE])
        self.key = mix_key(case.seed, 1)
        self.mimic_share, self.mimic_thr = 0.0, np.inf  # set by _make_mimicry, last
        self.style = make_style(case, rng, self.difficulty.stain_jitter)
        self._make_blobs(rng)
        self._calibrate(rng)
        self._make_bands(rng)
        self._make_vessels(rng)
        self._make_artefacts(rng)
        self._make_mimicry(rng)

    # ------------------------------------------------------------------ construction
    def _make_blobs(self, rng: np.random.Generator) -> None:
        """A main tissue piece and a few smaller fragments (elliptical cones, warped by noise)."""
        n = int(rng.integers(3, 7))
        m = min(self.wu, self.hu)
        blobs = []
        for i in range(n):
            big = i == 0
            ax = m * (rng.uniform(0.26, 0.34) if big else rng.uniform(0.1, 0.22))
            ay = ax * rng.uniform(0.6, 0.95)
            cx = rng.uniform(0.35, 0.65) * self.wu if big else rng.uniform(0.15, 0.85) * self.wu
            cy = rng.uniform(0.4, 0.6) * self.hu if big else rng.uniform(0.18, 0.82) * self.hu
            blobs.append((cx, cy, ax, ay, rng.uniform(0, math.pi)))
        self.blobs = np.array(blobs)
        self.tissue_period = 0.3 * m
        self.blob0_radius = float(min(self.blobs[0, 2], self.blobs[0, 3]))

    def _tissue_raw(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        t = np.full(np.broadcast_shapes(np.shape(x), np.shape(y)), -np.inf, np.float32)
        for cx, cy, ax, ay, ang in self.blobs:
            dx, dy = x - cx, y - cy
            c, s = math.cos(ang), math.sin(ang)
            q = ((dx * c + dy * s) / ax) ** 2 + ((-dx * s + dy * c) / ay) ** 2
            np.maximum(t, 1.0 - np.sqrt(q), out=t)  # a cone: steady slope at the edges
        t += 0.6 * _fbm(x, y, self.tissue_period, mix_key(self.key, 2), octaves=4)
        # keep tissue off the slide border
        edge = np.minimum(np.minimum(x, self.wu - x), np.minimum(y, self.hu - y))
        t -= 1.5 * (1.0 - smoothstep(0.0, 0.12 * min(self.wu, self.hu), edge))
        return t

    def _calibration_grid(self) -> tuple[np.ndarray, np.ndarray]:
        """160 x 120 cell centres over the slide (microns): where drawn shares are turned into thresholds."""
        return (np.arange(160) + 0.5) / 160 * self.wu, (np.arange(120) + 0.5) / 120 * self.hu

    def _calibrate(self, rng: np.random.Generator) -> None:
        """Pick the tissue threshold so that tissue covers a drawn fraction of the slide."""
        target = rng.uniform(0.38, 0.55)
        gx, gy = self._calibration_grid()
        vals = self._tissue_raw(gx[None, :], gy[:, None]).ravel()
        self.threshold = float(np.quantile(vals, 1.0 - target))
        self.target_coverage = float(target)
        # normal-lung threshold: a drawn share of the tissue is non-tumour lung (demo: 15-30 %)
        inside = vals > self.threshold
        nv = self._normal_raw(
            np.broadcast_to(gx[None, :], (120, 160)).ravel()[inside],
            np.broadcast_to(gy[:, None], (120, 160)).ravel()[inside],
        )
        self.normal_thr = float(np.quantile(nv, 1.0 - rng.uniform(*self.difficulty.normal_lung))) if nv.size else 1.0

    def _normal_raw(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return _fbm(x, y, 700.0, mix_key(self.key, 3), octaves=2)

    def _make_bands(self, rng: np.random.Generator) -> None:
        bands = []
        a0 = rng.uniform(0, 2 * math.pi)
        c = self.case
        if c.pleural_invasion != "unknown":
            bands.append(
                Band("pleura", a0, rng.uniform(1.2, 2.0), rng.uniform(35.0, 60.0), c.pleural_invasion == "present")
            )
        if c.adjacent_invasion == "present":  # a strip of chest-wall muscle infiltrated by tumour
            bands.append(
                Band(
                    "wall",
                    a0 + math.pi + rng.uniform(-0.4, 0.4),
                    rng.uniform(0.8, 1.3),
                    rng.uniform(150.0, 250.0),
                    True,
                )
            )
        self.bands = bands

    def _make_vessels(self, rng: np.random.Generator) -> None:
        area_mm2 = self.wu * self.hu / 1e6
        n = int(min(200, max(3, round(area_mm2 * 0.6))))
        xs = rng.uniform(0.05, 0.95, 40 * n) * self.wu
        ys = rng.uniform(0.05, 0.95, 40 * n) * self.hu
        f = self.fields(xs, ys)
        ok = np.flatnonzero((f["tis"] > 0.15) & (f["pleura"] < 0.01) & (f["wall"] < 0.01))[:n]
        invaded = self.case.vascular_invasion == "present"
        n_inv = max(1, len(ok) // 3) if invaded else 0
        self.vessels = [
            Vessel(float(xs[i]), float(ys[i]), float(rng.uniform(35, 75)), float(rng.uniform(7, 12)), k < n_inv)
            for k, i in enumerate(ok)
        ]

    def _make_artefacts(self, rng: np.random.Generator) -> None:
        self.pen = None
        self.fold = None
        if rng.random() < 0.2:  # a pen stroke, partly over glass
            color = ("green", "blue", "black")[int(rng.integers(3))]
            x0 = rng.uniform(0.05, 0.5) * self.wu
            self.pen = dict(
                od=PEN_OD[color] * rng.uniform(1.0, 1.6),
                x0=x0,
                x1=min(self.wu, x0 + rng.uniform(0.25, 0.45) * self.wu),
                y0=rng.uniform(0.08, 0.92) * self.hu,
                amp=rng.uniform(0.02, 0.08) * self.hu,
                period=rng.uniform(0.3, 0.8) * self.wu,
                phase=rng.uniform(0, 2 * math.pi),
                half_width=rng.uniform(60.0, 140.0),
            )
        if rng.random() < 0.2:  # a tissue fold: a strip of doubled tissue
            ang = rng.uniform(0, math.pi)
            nx, ny = math.cos(ang), math.sin(ang)
            cx, cy = self.blobs[0, 0], self.blobs[0, 1]
            self.fold = dict(
                nx=nx,
                ny=ny,
                c=nx * cx + ny * cy + rng.uniform(-0.2, 0.2) * self.blob0_radius,
                half_width=rng.uniform(25.0, 60.0),
            )

    def _make_mimicry(self, rng: np.random.Generator) -> None:
        """Patches of tumour drawn with the other class's morphology (``Difficulty.overlap``); drawn last, so
        a cohort without them is the same as before the knob existed."""
        lo, hi = self.difficulty.overlap
        self.mimic_share = float(rng.uniform(lo, hi)) if hi > 0 else 0.0
        self.mimic_thr = np.inf
        if self.mimic_share > 0:
            gx, gy = self._calibration_grid()
            vals = self._mimic_raw(gx[None, :], gy[:, None]).ravel()
            self.mimic_thr = float(np.quantile(vals, 1.0 - self.mimic_share))

    def _mimic_raw(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return _fbm(x, y, 450.0, mix_key(self.key, 6), octaves=2)

    # ------------------------------------------------------------------ fields
    def _edge_distance(self, x: np.ndarray, y: np.ndarray, tis: np.ndarray) -> np.ndarray:
        """Approximate distance (microns) from inside points to the tissue edge: tis / |grad tis|."""
        if _is_grid(x, y) and x.shape[1] > 1 and y.shape[0] > 1:
            gy, gx = np.gradient(tis, float(y[1, 0] - y[0, 0]), float(x[0, 1] - x[0, 0]))
        else:
            h = 4.0
            gx = (self._tissue_raw(x + h, y) - self._tissue_raw(x - h, y)) / (2 * h)
            gy = (self._tissue_raw(x, y + h) - self._tissue_raw(x, y - h)) / (2 * h)
        return tis / np.maximum(np.hypot(gx, gy), 1e-5)

    def fields(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """Smooth fields at positions (microns), see the module docstring.

        ``x``/``y`` broadcast against each other; a row (1 x n) and a column (m x 1) are
        evaluated as a grid (faster: noise by matrix products).
        """
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        tis = self._tissue_raw(x, y) - self.threshold
        nrm = smoothstep(-0.025, 0.025, self._normal_raw(x, y) - self.normal_thr)
        arch = _fbm(x, y, 260.0, mix_key(self.key, 4), octaves=2)
        mod = 1.0 + 0.12 * _fbm(x, y, 900.0, mix_key(self.key, 5), octaves=1)
        pleura = np.zeros(np.shape(tis), np.float32)
        wall = np.zeros(np.shape(tis), np.float32)
        if self.bands:
            cx, cy = self.blobs[0, 0], self.blobs[0, 1]
            ang = np.arctan2(y - cy, x - cx)
            dist = self._edge_distance(x, y, tis)
            for b in self.bands:
                d = np.mod(ang - b.angle0, 2 * math.pi)
                sector = smoothstep(0.0, 0.15, d) * (1.0 - smoothstep(b.width_angle - 0.15, b.width_angle, d))
                inside = (1.0 - smoothstep(b.width * 0.9, b.width, dist)) * (tis > -0.01)
                member = (sector * inside).astype(np.float32)
                # invaded: tumour reaches the band; not invaded: alveolar lung beneath it
                near = sector * (1.0 - smoothstep(b.width, b.width + 250.0, dist))
                nrm = nrm * (1 - near) + near * (0.0 if b.invaded else 1.0)
                if b.kind == "pleura":
                    pleura = np.maximum(pleura, member)
                else:
                    wall = np.maximum(wall, member)
        if self.mimic_share > 0:
            mim = smoothstep(-0.02, 0.02, self._mimic_raw(x, y) - self.mimic_thr).astype(np.float32)
        else:
            mim = np.zeros(np.shape(tis), np.float32)
        return {
            "tis": tis.astype(np.float32),
            "nrm": nrm.astype(np.float32),
            "arch": arch.astype(np.float32),
            "mod": mod.astype(np.float32),
            "pleura": pleura,
            "wall": wall,
            "mim": mim,
        }

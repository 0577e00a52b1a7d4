"""Render tiles of a synthetic H&E slide from its :class:`~fiveflow.cohort.scene.Scene`.

Each tile is drawn on its own (bounded memory, seamless joins):

1. smooth fields (tissue, normal lung, architecture, stain modulation, edge bands) are evaluated
   on a coarse lattice around the tile and upsampled with two small matrix products;
2. stain *densities* are accumulated per pixel - haematoxylin H, eosin E, red R (blood,
   keratin), dark pigment D, plus a coverage channel C for cell mosaics: stroma from ridged
   noise; alveolar septa from a Voronoi diagram of a jittered grid; then primitives generated
   on jittered grids from a hash of their grid cell (cells, nuclei, keratin pearls, glands,
   vessels, lymphocytes...). Only primitives that can reach the tile are generated; sizes are
   in microns, so the same scene can be drawn at any pixel size;
3. Beer-Lambert: ``rgb = glass * exp(-densities @ optical_densities)``, plus a little noise.

Class morphology: LUAD draws acini (a pale lumen in a ring of columnar cells with basal
nuclei) in desmoplastic stroma, with solid sheets and stray cells as the grade worsens; LUSC
draws nests of large polygonal pink cells with central vesicular nuclei and concentric keratin
pearls (more of them when well differentiated).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .noise import bilinear_matrix, coord_base, finish_u01, hash_u01, mix_key, value_noise_grid, value_noise_points
from .scene import Scene, smoothstep

TILE = 256
LATTICE_PX = 16  # coarse field lattice step, in pixels of the level being drawn
MARGIN_UM = 100.0  # largest primitive reach beyond its centre (pearls, vessels, glands)
SOFT_PX = 0.8  # anti-aliased edge width, in pixels
H, E, R, D, C, C2 = range(6)  # C, C2: sum and sum of squares of cell cones


@dataclass
class Cells:
    """Jittered-grid candidates near a tile: grid indices, centres (microns), per-cell random numbers."""

    ix: np.ndarray
    iy: np.ndarray
    x: np.ndarray
    y: np.ndarray
    key: int
    base: np.ndarray

    def u(self, ch: int) -> np.ndarray:
        return finish_u01(self.base, mix_key(self.key, ch))

    def uu(self, ch0: int, n: int) -> np.ndarray:
        """Channels ``ch0 .. ch0 + n - 1`` at once, shape (n, len)."""
        return finish_u01(self.base[None, :], [mix_key(self.key, ch) for ch in range(ch0, ch0 + n)])

    def take(self, keep: np.ndarray) -> Cells:
        return Cells(self.ix[keep], self.iy[keep], self.x[keep], self.y[keep], self.key, self.base[keep])

    def __len__(self) -> int:
        return len(self.x)


class Splats:
    """Elliptical blobs collected for one tile and drawn in a few vectorised batches.

    Profile ``cone=False``: a flat blob with an anti-aliased edge (nuclei, discs);
    ``cone=True``: ``1 - r^2``, summed into the coverage channel C (and its square into C2) to
    build cell mosaics: where one cell dominates ``C2 / C^2`` is near 1, on the border between
    two cells it drops to about 1/2 - a cheap Voronoi-like membrane without nearest-site search.
    """

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []

    def add(self, x, y, a, b, theta, h=0.0, e=0.0, r=0.0, d=0.0, c=0.0, rim=0.0, cone=False) -> None:
        """Centres and semi-axes in microns, angle in radians, densities per channel, rim darkening (0..1)."""
        x = np.atleast_1d(np.asarray(x, np.float32))
        n = len(x)
        if n == 0:
            return
        block = np.empty((13, n), np.float32)
        for i, v in enumerate((x, y, a, b, theta, h, e, r, d, c, c, rim, float(cone))):
            block[i] = v
        self.parts.append(block)

    def draw(self, dens: np.ndarray, x0: float, y0: float, ps: float) -> None:
        """Accumulate into ``dens`` (6, T, T); tile origin (x0, y0) in microns, pixel size ``ps``."""
        if not self.parts:
            return
        x, y, a, b, th, *amps, rim, cone = np.concatenate(self.parts, axis=1)
        T = dens.shape[1]
        cx = (x - x0) / ps - 0.5
        cy = (y - y0) / ps - 0.5
        a = np.maximum(a / ps, 0.45)
        b = np.maximum(b / ps, 0.45)
        reach = np.ceil(np.maximum(a, b) + SOFT_PX + 0.5).astype(np.int64)
        vis = (cx + reach >= 0) & (cx - reach < T) & (cy + reach >= 0) & (cy - reach < T)
        if not vis.any():
            return
        bucket = np.minimum(np.ceil(np.log2(np.maximum(reach, 1)) * 2).astype(np.int64), 20) * 2 + (cone > 0)
        bucket[~vis] = -1
        flat = dens.reshape(dens.shape[0], -1)
        cos, sin = np.cos(th), np.sin(th)
        for bk in np.unique(bucket):
            if bk < 0:
                continue
            sel = np.flatnonzero(bucket == bk)
            rad = int(reach[sel].max())
            off = np.arange(-rad, rad + 1)
            icx = np.rint(cx[sel]).astype(np.int64)
            icy = np.rint(cy[sel]).astype(np.int64)
            X = icx[:, None] + off
            Y = icy[:, None] + off
            dx = (X - cx[sel, None]).astype(np.float32)[:, None, :]
            dy = (Y - cy[sel, None]).astype(np.float32)[:, :, None]
            ia = (1.0 / a[sel])[:, None, None]
            ib = (1.0 / b[sel])[:, None, None]
            c = cos[sel][:, None, None]
            s = sin[sel][:, None, None]
            u = dx * (c * ia) + dy * (s * ia)
            v = dy * (c * ib) - dx * (s * ib)
            u *= u
            v *= v
            u += v  # squared elliptical radius
            if bk % 2:  # cone profile
                val = 1.0 - u
            else:  # flat, edge ~SOFT_PX wide: (1 - d^2)/2 ~ 1 - d
                val = (1.0 - u) * (b[sel] * (0.5 / SOFT_PX))[:, None, None] + 0.5
            np.clip(val, 0.0, 1.0, out=val)
            rr = rim[sel]
            if rr.any():
                np.minimum(u, 1.0, out=u)
                rr = rr[:, None, None]
                val *= (1.0 - rr) + (1.6 * rr) * u
            ok = val > 0
            ok &= ((X >= 0) & (X < T))[:, None, :]
            ok &= ((Y >= 0) & (Y < T))[:, :, None]
            idx = ((Y * T)[:, :, None] + X[:, None, :])[ok]
            w = val[ok]
            nrep = ok.sum(axis=(1, 2))
            for ch, amp in enumerate(amps):
                a_sel = amp[sel]
                if a_sel.any():
                    ww = w * w if ch == C2 else w
                    wt = ww if np.all(a_sel == 1.0) else ww * np.repeat(a_sel, nrep)
                    flat[ch] += np.bincount(idx, weights=wt, minlength=T * T).astype(np.float32)


class TileRenderer:
    """Draws tiles of one scene; see the module docstring."""

    def __init__(self, scene: Scene, tile: int = TILE):
        self.scene = scene
        self.st = scene.style
        self.T = int(tile)
        self.key = scene.key
        # small banks of pixel noise (sensor noise, chromatin grain); a tile picks one by its hash
        rng = np.random.default_rng([scene.case.seed, 77])
        T = self.T
        self._noise = rng.normal(0.0, 1.0, (4, T, T)).astype(np.float32)
        g = rng.normal(0.0, 1.0, (4, T + 1, T + 1)).astype(np.float32)
        self._grain = (g[:, :-1, :-1] + g[:, 1:, :-1] + g[:, :-1, 1:] + g[:, 1:, 1:]) * 0.5
        self._glass: dict[int, list[np.ndarray]] = {}
        self._od = np.asarray(self.st.od, np.float32)
        self._strip_key: tuple[int, int] | None = None
        vs = scene.vessels
        self._vessel_xyr = np.array([[v.x, v.y, v.radius + v.wall] for v in vs], np.float64).reshape(-1, 3)
        self._excl: list[np.ndarray] = []
        self._glass_rgb = np.asarray(self.st.glass, np.float32)

    # ------------------------------------------------------------------ helpers
    def _bank(self, bank: np.ndarray, tile_key: int) -> np.ndarray:
        a = bank[tile_key & 3]
        if tile_key & 4:
            a = a[::-1]
        if tile_key & 8:
            a = a[:, ::-1]
        return a.T if tile_key & 16 else a

    def _glass_tile(self, level: int, tile_key: int) -> np.ndarray:
        if level not in self._glass:
            amp = 2.2 / (2**level) ** 0.5
            self._glass[level] = [
                np.clip(self._glass_rgb[None, None, :] + amp * n[..., None] + 0.5, 0, 255).astype(np.uint8)
                for n in self._noise
            ]
        t = self._glass[level][tile_key & 3]
        if tile_key & 4:
            t = t[::-1]
        if tile_key & 8:
            t = t[:, ::-1]
        return np.ascontiguousarray(t)

    def _cells(self, b: tuple[float, float, float, float], spacing: float, name: int, jitter: float = 0.8) -> Cells:
        x0, y0, x1, y1 = b
        ix = np.arange(math.floor(x0 / spacing), math.floor(x1 / spacing) + 1)
        iy = np.arange(math.floor(y0 / spacing), math.floor(y1 / spacing) + 1)
        IX = np.repeat(ix[None, :], len(iy), 0).ravel()
        IY = np.repeat(iy[:, None], len(ix), 1).ravel()
        key = mix_key(self.key, 100 + name)
        c = Cells(IX, IY, np.zeros(0), np.zeros(0), key, coord_base(IX, IY))
        c.x = (IX + 0.5 + jitter * (c.u(0) - 0.5)) * spacing
        c.y = (IY + 0.5 + jitter * (c.u(1) - 0.5)) * spacing
        inside = (c.x >= x0) & (c.x < x1) & (c.y >= y0) & (c.y < y1)
        return c.take(inside)

    def _at(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """Bilinear lookup of all lattice fields at points (microns): name -> values."""
        lat = self._stack
        gx = np.clip(x / self._L - self._k0x, 0, lat.shape[2] - 1.001)
        gy = np.clip(y / self._L - self._k0y, 0, lat.shape[1] - 1.001)
        ix = gx.astype(np.int64)
        iy = gy.astype(np.int64)
        fx = (gx - ix).astype(np.float32)
        fy = (gy - iy).astype(np.float32)
        top = lat[:, iy, ix] * (1 - fx) + lat[:, iy, ix + 1] * fx
        bot = lat[:, iy + 1, ix] * (1 - fx) + lat[:, iy + 1, ix + 1] * fx
        v = top * (1 - fy) + bot * fy
        return dict(zip(self._names, v))

    # ------------------------------------------------------------------ alveoli
    def _alveolar_sites(self, x0: float, y0: float, x1: float, y1: float) -> Cells:
        sp, m = 105.0, 140.0
        return self._cells((x0 - m, y0 - m, x1 + m, y1 + m), sp, 20, jitter=0.9)

    def _warp(self, x: np.ndarray, y: np.ndarray, grid: bool) -> tuple[np.ndarray, np.ndarray]:
        """Domain warp (microns) that bends the alveolar walls."""
        k = mix_key(self.key, 22)
        if grid:
            wx = value_noise_grid(x, y, 70.0, k)
            wy = value_noise_grid(x, y, 70.0, k + 1)
            return (x.astype(np.float32)[None, :] + 16.0 * wx), (y.astype(np.float32)[:, None] + 16.0 * wy)
        return x + 16.0 * value_noise_points(x, y, 70.0, k), y + 16.0 * value_noise_points(x, y, 70.0, k + 1)

    def _septa_grid(self, xs: np.ndarray, ys: np.ndarray, ps: float) -> np.ndarray:
        """Alveolar walls (0..1): the edges of a warped Voronoi diagram of jittered sites."""
        sites = self._alveolar_sites(xs[0], ys[0], xs[-1], ys[-1])
        X, Y = self._warp(xs, ys, True)
        f1 = np.full((len(ys), len(xs)), 1e12, np.float32)
        f2 = f1.copy()
        for px, py in zip(sites.x.astype(np.float32), sites.y.astype(np.float32)):
            dx = X - px
            d = dx * dx
            dy = Y - py
            d += dy * dy
            np.minimum(f2, np.maximum(f1, d), out=f2)
            np.minimum(f1, d, out=f1)
        edge = (np.sqrt(f2) - np.sqrt(f1)) * 0.5  # ~ distance to the nearest wall
        k = mix_key(self.key, 21)
        thick = 1.8 + 1.6 * value_noise_grid(xs, ys, 60.0, k) ** 2
        w = max(0.5 * ps, 0.4)
        wall = 1.0 - smoothstep(0.0, 1.0, (edge - thick) / (2 * w) + 0.5)
        openings = smoothstep(-0.45, -0.2, value_noise_grid(xs, ys, 85.0, k + 1))  # alveolar ducts
        return wall * openings * np.minimum(1.0, 2.0 / max(ps, 2.0))

    def _septa_points(self, x: np.ndarray, y: np.ndarray, b) -> np.ndarray:
        """Distance (microns) from points to the nearest alveolar wall."""
        sites = self._alveolar_sites(*b)
        if len(sites) < 2 or len(x) == 0:
            return np.full(len(x), 1e3, np.float32)
        X, Y = self._warp(x, y, False)
        d = np.sqrt((X[:, None] - sites.x[None, :]) ** 2 + (Y[:, None] - sites.y[None, :]) ** 2)
        d.sort(axis=1)
        return (d[:, 1] - d[:, 0]) * 0.5

    def _strip(self, level: int, oy: int) -> tuple[np.ndarray, int, int]:
        """Lattice fields for a whole row of tiles (cached: tiles come row by row).

        Memory grows with the slide's width only (a few bytes per lattice node).
        """
        if self._strip_key != (level, oy):
            sc = self.scene
            ps = sc.mpp * 2**level
            L = LATTICE_PX * ps
            y0, y1 = oy * ps, (oy + self.T) * ps
            k0x = math.floor(-MARGIN_UM / L)
            k0y = math.floor((y0 - MARGIN_UM) / L)
            lx = np.arange(k0x, math.ceil((sc.wu + self.T * ps + MARGIN_UM) / L) + 2) * L
            ly = np.arange(k0y, math.ceil((y1 + MARGIN_UM) / L) + 2) * L
            lat = sc.fields(lx[None, :], ly[:, None])
            self._names = list(lat)
            self._strip_val = (np.stack([lat[k] for k in self._names]), k0x, k0y)
            self._strip_key = (level, oy)
        return self._strip_val

    # ------------------------------------------------------------------ tile
    def render(self, level: int, ox: int, oy: int) -> np.ndarray:
        """RGB uint8 tile (T x T x 3) at ``level`` whose top-left pixel is (ox, oy) in level pixels."""
        sc, st, T = self.scene, self.st, self.T
        f = 2**level
        ps = sc.mpp * f
        x0, y0 = ox * ps, oy * ps
        x1, y1 = x0 + T * ps, y0 + T * ps
        xs = (ox + np.arange(T) + 0.5) * ps
        ys = (oy + np.arange(T) + 0.5) * ps
        tile_key = mix_key(self.key, level, ox, oy)
        pen = self._pen(xs, ys)
        # coarse lattice of the smooth fields around the tile (cut from the tile row's strip)
        L = LATTICE_PX * ps
        self._L = L
        strip, sk0x, sk0y = self._strip(level, oy)
        self._k0x = math.floor((x0 - MARGIN_UM) / L)
        self._k0y = sk0y
        c0 = self._k0x - sk0x
        self._stack = strip[:, :, c0 : c0 + math.ceil((x1 + MARGIN_UM) / L) + 2 - self._k0x]
        self._lat = dict(zip(self._names, self._stack))
        dens = np.zeros((6, T, T), np.float32)
        if float(self._lat["tis"].max()) < -0.03:
            if pen is None:
                return self._glass_tile(level, tile_key)
            return self._compose(dens, pen, tile_key, f)
        wx, kx = bilinear_matrix(xs, L, smooth=False)
        wy, ky = bilinear_matrix(ys, L, smooth=False)
        sx, sy = kx - self._k0x, ky - self._k0y

        def up(name: str) -> np.ndarray:
            lat = self._lat[name][sy : sy + wy.shape[1], sx : sx + wx.shape[1]]
            return wy @ lat @ wx.T

        tis = up("tis") + 0.02 * value_noise_grid(xs, ys, 24.0, mix_key(self.key, 7))
        A = smoothstep(-0.004, 0.004, tis).astype(np.float32)
        nrm = np.clip(up("nrm"), 0, 1) * A

        # --- background: stroma (tumour area) and alveolar septa (normal lung)
        k8 = mix_key(self.key, 8)
        n1 = value_noise_grid(xs, ys, 22.0, k8)
        n2 = value_noise_grid(xs, ys, 9.0, k8 + 1) if ps < 3.0 else 0.0
        ridge = (1.0 - np.abs(n1 + 0.4 * n2)) ** 3
        stroma = st.stroma_e * (0.45 + 0.9 * ridge)
        septa = self._septa_grid(xs, ys, ps) if nrm.max() > 0.02 else 0.0
        dens[E] = A * ((1.0 - nrm) * stroma + nrm * (0.04 + 0.8 * septa))
        dens[H] = A * ((1.0 - nrm) * st.stroma_h * (0.7 + 0.6 * ridge) + nrm * 0.14 * septa)
        if sc.bands:
            pleura, wall = up("pleura") * A, up("wall") * A
        else:
            pleura = wall = None

        bounds = (x0 - MARGIN_UM, y0 - MARGIN_UM, x1 + MARGIN_UM, y1 + MARGIN_UM)
        # --- cell mosaics (coverage), which replace the stroma where the cells are
        cov = Splats()
        nuc = Splats()
        over = _Overlay(T)
        self._excl = [self._vessel_xyr]
        own, other = (self._squamous, self._glandular) if st.is_lusc else (self._glandular, self._squamous)
        own(cov, nuc, over, bounds, xs, ys, ps)
        mimic = sc.mimic_share > 0 and float(self._lat["mim"].max()) > 0.0
        if mimic:  # patches of the other class's morphology (Difficulty.overlap)
            other(cov, nuc, over, bounds, xs, ys, ps, mimic=True)
        if cov.parts:
            cov.draw(dens, x0, y0, ps)
            c = dens[C]
            fill = smoothstep(0.22, 0.45, c)
            dominance = dens[C2] / np.maximum(c * c, 1e-6)
            membrane = (
                smoothstep(0.3, 0.42, dominance)
                * fill
                * (1.0 - smoothstep(0.5, 0.5 + 0.12 * max(1.0, ps / 0.5), dominance))
            )
            cyto = st.cyto_e if st.is_lusc else 0.5
            if mimic:  # squamous cytoplasm where squamous cells are drawn
                m = np.clip(up("mim"), 0, 1)
                cyto = 0.5 + (st.cyto_e - 0.5) * ((1 - m) if st.is_lusc else m)
            dens[E] = dens[E] * (1 - fill) + fill * cyto * (0.6 + 0.1 * np.abs(n1)) + membrane * 0.3
            dens[H] = dens[H] * (1 - fill) + fill * 0.07 + membrane * 0.08
        # --- structures that replace what is below them
        if pleura is not None and pleura.max() > 0:
            self._pleura(over, xs, ys, pleura, ps)
        if wall is not None and wall.max() > 0:
            self._muscle(over, xs, ys, wall, ps)
        self._vessels(nuc, over, xs, ys, ps, x0, y0, x1, y1)
        over.apply(dens)
        # --- nuclei and other small objects
        self._shared(nuc, bounds, ps)
        nuc.draw(dens, x0, y0, ps)
        dens[:4] *= up("mod")[None]
        dens[H] *= 1.0 + (0.25 / f**0.5) * self._bank(self._grain, tile_key >> 5)
        if sc.fold is not None:
            self._fold(dens, xs, ys, A)
        return self._compose(dens, pen, tile_key, f)

    # ------------------------------------------------------------------ class morphology
    def _region(self, f: dict[str, np.ndarray], mimic: bool) -> np.ndarray | bool:
        """Where a morphology function draws: its own class's outside the mimicry patches, the other's inside."""
        if not mimic and self.scene.mimic_share <= 0:
            return True
        return f["mim"] >= 0.5 if mimic else f["mim"] < 0.5

    def _squamous(self, cov: Splats, nuc: Splats, over: _Overlay, b, xs, ys, ps, mimic: bool = False) -> None:
        st = self.st
        inv_pleura = self.scene.case.pleural_invasion == "present"
        # keratin pearls (cells are kept out of them)
        pr = self._cells(b, st.pearl_spacing, 1, jitter=0.5)
        if len(pr):
            f = self._at(pr.x, pr.y)
            ok = (
                (f["tis"] > 0.03)
                & (f["nrm"] < 0.3)
                & (f["arch"] > st.nest_thr + 0.15)
                & (pr.u(2) < st.pearl_p)
                & (f["pleura"] < 0.1)
                & self._region(f, mimic)
            )
            pr = pr.take(ok)
        lo, hi = st.pearl_radius
        prad = lo + (hi - lo) * pr.u(3) if len(pr) else np.zeros(0)
        if mimic:  # drawn after the slide's own morphology: keep clear of its glands
            keep = self._clear(pr.x, pr.y, prad)
            pr, prad = pr.take(keep), prad[keep]
        self._excl.append(np.stack([pr.x, pr.y, prad * 1.1], 1))
        for i in range(len(pr)):
            self._pearl(
                nuc, over, float(pr.x[i]), float(pr.y[i]), float(prad[i]), xs, ys, ps, int(pr.ix[i]), int(pr.iy[i])
            )
        # the squamous cells: polygonal mosaic, central vesicular nuclei
        c = self._cells(b, st.cell_spacing, 2, jitter=0.6)
        f = self._at(c.x, c.y)
        ok = (f["tis"] > 0.0) & (c.u(2) > f["nrm"]) & (f["arch"] > st.nest_thr) & self._region(f, mimic)
        if not inv_pleura:
            ok &= f["pleura"] < 0.5
        for i in range(len(pr)):
            ok &= np.hypot(c.x - pr.x[i], c.y - pr.y[i]) > prad[i] + 0.5 * st.cell_spacing
        if mimic:
            ok &= self._free(c.x, c.y)
        c = c.take(ok)
        if len(c) == 0:
            return
        r_cell = st.cell_spacing * 0.8
        cov.add(c.x, c.y, r_cell, r_cell * (0.85 + 0.15 * c.u(5)), c.u(6) * math.pi, c=1.0, cone=True)
        ker = c.u(3) < st.keratin_p
        kc = c.take(ker)
        if len(kc):  # single-cell keratinisation: glassy, bright eosinophilic cytoplasm
            nuc.add(kc.x, kc.y, 0.4 * st.cell_spacing, 0.36 * st.cell_spacing, 0.0, e=0.22, r=0.05)
        pl = st.pleomorphism
        rn = st.nuc_radius * (1.0 + pl * (2 * c.u(7) - 1)) * np.where(ker, 0.55, 1.0)
        jx = (c.u(8) - 0.5) * 2.5
        jy = (c.u(9) - 0.5) * 2.5
        nuc.add(
            c.x + jx,
            c.y + jy,
            rn,
            rn * (0.78 + 0.2 * c.u(10)),
            c.u(11) * math.pi,
            h=np.where(ker, 1.7, 1.0 + 0.3 * c.u(12)) * (1 + 0.08 * st.grade),
            e=0.25,
            rim=np.where(ker, 0.0, 0.45),
        )
        # a dark nucleolus in some vesicular nuclei
        nn = c.take(~ker & (c.u(13) < 0.5))
        if len(nn):
            nuc.add(nn.x + (nn.u(8) - 0.5) * 2.5, nn.y + (nn.u(9) - 0.5) * 2.5, 0.9, 0.9, 0.0, h=0.9, e=0.3)

    def _pearl(self, nuc: Splats, over: _Overlay, cx, cy, R, xs, ys, ps, ix, iy) -> None:
        key = mix_key(self.key, 200, ix, iy)
        reach = R * 1.1 + 4.0
        i0, i1 = np.searchsorted(xs, [cx - reach, cx + reach])
        j0, j1 = np.searchsorted(ys, [cy - reach, cy + reach])
        if i1 > i0 and j1 > j0:
            dx = xs[None, i0:i1] - cx
            dy = ys[j0:j1, None] - cy
            r = np.sqrt(dx * dx + dy * dy * 1.15)
            wob = value_noise_grid(xs[i0:i1], ys[j0:j1], 14.0, key)
            edge = R * (1.0 + 0.08 * value_noise_grid(xs[i0:i1], ys[j0:j1], 0.6 * R, key + 1))
            inside = np.clip((edge - r) / max(ps, 0.8) + 0.5, 0, 1).astype(np.float32)
            lam = 5.5 + 2.0 * float(hash_u01(ix, iy, key))
            ring = 0.5 + 0.5 * np.cos(2 * math.pi * r / lam + 3.5 * wob) if lam > 2.5 * ps else 0.5
            ring = 0.6 * ring + 0.4 * (0.5 + 0.5 * wob)
            sl = (slice(j0, j1), slice(i0, i1))
            over.replace(sl, inside, e=inside * (0.62 + 0.28 * ring), r=inside * (0.12 + 0.06 * ring), h=inside * 0.03)
        # flattened, concentric nuclei at the rim and a few ghosts within
        n = max(6, int(2 * math.pi * R / 10.0))
        k = np.arange(n)
        ang = 2 * math.pi * (k + 0.4 * hash_u01(k, 1, key)) / n
        rad = R * (0.96 + 0.12 * hash_u01(k, 2, key))
        nuc.add(
            cx + rad * np.cos(ang), cy + rad * np.sin(ang) / math.sqrt(1.15), 5.5, 1.7, ang + math.pi / 2, h=1.4, e=0.3
        )
        m = max(2, n // 5)
        ang2 = 2 * math.pi * hash_u01(np.arange(m), 3, key)
        rad2 = R * 0.6 * hash_u01(np.arange(m), 4, key)
        nuc.add(cx + rad2 * np.cos(ang2), cy + rad2 * np.sin(ang2), 3.0, 1.1, ang2 + math.pi / 2, h=0.7, e=0.1)

    def _glandular(self, cov: Splats, nuc: Splats, over: _Overlay, b, xs, ys, ps, mimic: bool = False) -> None:
        st = self.st
        inv_pleura = self.scene.case.pleural_invasion == "present"
        g = self._cells(b, st.gland_spacing, 3, jitter=0.45)
        if len(g):
            f = self._at(g.x, g.y)
            ok = (
                (f["tis"] > 0.01)
                & (g.u(2) > f["nrm"])
                & (f["arch"] < st.solid_thr - 0.03)
                & (g.u(3) < st.gland_p)
                & self._region(f, mimic)
            )
            if not inv_pleura:
                ok &= f["pleura"] < 0.3
            g = g.take(ok)
        lo, hi = st.lumen_radius
        lum = lo + (hi - lo) * g.u(4) if len(g) else np.zeros(0)
        if mimic:  # drawn after the slide's own morphology: keep clear of its keratin pearls
            keep = self._clear(g.x, g.y, lum + st.epi_thickness)
            g, lum = g.take(keep), lum[keep]
        outer = lum + st.epi_thickness
        self._excl.append(np.stack([g.x, g.y, (outer * (1 + st.gland_irregular * 1.2) + 2.0)], 1))
        for i in range(len(g)):
            self._gland(nuc, over, g, i, float(lum[i]), xs, ys, ps)
        # solid sheets (a mosaic of small cells) and stray tumour cells outside the glands
        c = self._cells(b, 11.5, 4, jitter=0.7)
        f = self._at(c.x, c.y)
        solid = f["arch"] > st.solid_thr
        ok = (f["tis"] > 0.0) & (c.u(2) > f["nrm"]) & (solid | (c.u(3) < st.stray_p)) & self._region(f, mimic)
        if not inv_pleura:
            ok &= f["pleura"] < 0.5
        for i in range(len(g)):
            ok &= np.hypot(c.x - g.x[i], c.y - g.y[i]) > outer[i] * 1.2
        if mimic:
            ok &= self._free(c.x, c.y)
        c = c.take(ok)
        if len(c):
            rn = 3.3 * (1 + 0.1 * st.grade) * (0.8 + 0.45 * c.u(5))
            nuc.add(c.x, c.y, rn, rn * (0.7 + 0.25 * c.u(6)), c.u(7) * math.pi, h=1.2 + 0.3 * c.u(8), e=0.25, rim=0.2)
            sc = c.take(solid[ok])
            if len(sc):
                cov.add(sc.x, sc.y, 9.6, 9.0, sc.u(9) * math.pi, c=1.0, cone=True)

    def _gland(self, nuc: Splats, over: _Overlay, g: Cells, i: int, R: float, xs, ys, ps) -> None:
        st = self.st
        seed2 = int(g.ix[i]) * 7919 + int(g.iy[i])
        u = [float(v) for v in hash_u01(np.arange(8), seed2, mix_key(self.key, 300))]
        cx, cy = float(g.x[i]), float(g.y[i])
        irr = st.gland_irregular
        aspect = 1.0 + irr * 1.5 * u[0]
        rot = u[1] * math.pi
        w2, w3 = irr * 0.45 * u[2], irr * 0.3 * u[3]
        t_e = st.epi_thickness * (0.9 + 0.2 * u[4])
        R_out = (R + t_e) * (1 + w2 + w3) * aspect + 3.0
        i0, i1 = np.searchsorted(xs, [cx - R_out, cx + R_out])
        j0, j1 = np.searchsorted(ys, [cy - R_out, cy + R_out])
        c, s = math.cos(rot), math.sin(rot)
        if i1 > i0 and j1 > j0:
            dx = xs[None, i0:i1] - cx
            dy = ys[j0:j1, None] - cy
            pu = dx * c + dy * s
            pv = (dy * c - dx * s) * aspect
            rho2 = pu * pu + pv * pv + 1e-6
            rho = np.sqrt(rho2)
            cos2 = (pu * pu - pv * pv) / rho2
            cos3 = (pu * pu * pu - 3 * pu * pv * pv) / (rho2 * rho)
            rho = rho * (1.0 + w2 * cos2 + w3 * cos3) / aspect**0.5
            e = max(ps, 0.8)
            lumen = np.clip((R - rho) / e + 0.5, 0, 1)
            gland = np.clip((R + t_e - rho) / e + 0.5, 0, 1)
            epi = gland - lumen
            apical = np.exp(-(((rho - R) / 1.5) ** 2)) * epi  # brush border / apical cytoplasm
            mucin = 0.05 * (u[5] > 0.6)
            over.replace(
                (slice(j0, j1), slice(i0, i1)),
                gland,
                e=epi * 0.50 + apical * 0.25 + lumen * mucin,
                h=epi * 0.18 + lumen * mucin,
            )
        # columnar cells: basal, radially elongated nuclei around the ring
        circ = 2 * math.pi * (R + 0.65 * t_e)
        n = max(6, int(circ / (7.0 - 0.6 * st.grade)))
        k = np.arange(n)
        hk = hash_u01(k, seed2, mix_key(self.key, 301))
        hk2 = hash_u01(k, seed2, mix_key(self.key, 302))
        th = 2 * math.pi * (k + 0.3 * hk) / n
        pu, pv = np.cos(th), np.sin(th)
        factor = (1.0 + w2 * (pu * pu - pv * pv) + w3 * (pu**3 - 3 * pu * pv * pv)) / aspect**0.5
        strat = (hk2 < 0.12 * st.grade) * 0.3
        target = R + t_e * (0.66 - strat + 0.1 * hk2)
        rr = target / factor
        lu, lv = rr * pu, rr * pv / aspect
        nx = cx + lu * c - lv * s
        ny = cy + lu * s + lv * c
        ang = np.arctan2(ny - cy, nx - cx)
        big = 1.0 + 0.12 * st.grade
        nuc.add(nx, ny, 3.8 * big, 2.1 * big, ang, h=1.25 + 0.25 * hk, e=0.25)

    # ------------------------------------------------------------------ shared components
    def _clear(self, x: np.ndarray, y: np.ndarray, r: np.ndarray | float) -> np.ndarray:
        """True where a disc of radius ``r`` at (x, y) overlaps no gland, keratin pearl or vessel near the tile."""
        ex = np.concatenate(self._excl, axis=0) if self._excl else np.zeros((0, 3))
        if len(ex) == 0 or len(x) == 0:
            return np.ones(len(x), bool)
        d2 = (x[:, None] - ex[None, :, 0]) ** 2 + (y[:, None] - ex[None, :, 1]) ** 2
        return np.all(d2 > (ex[None, :, 2] + np.reshape(r, (-1, 1))) ** 2, axis=1)

    def _free(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """True where a point lies outside every gland, keratin pearl and vessel near the tile."""
        return self._clear(x, y, 0.0)

    def _shared(self, nuc: Splats, b, ps) -> None:
        st = self.st
        sc = self.scene
        thr = st.nest_thr if st.is_lusc else st.solid_thr
        # lymphocytes, in stroma, sometimes in aggregates
        c = self._cells(b, 8.5, 10, jitter=0.8)
        f = self._at(c.x, c.y)
        tis, arch, nrm = f["tis"], f["arch"], f["nrm"]
        agg = np.clip(value_noise_points(c.x, c.y, 280.0, mix_key(self.key, 11)) * 1.6 - 0.4, 0, 1)
        dens_l = 0.05 + 0.6 * st.lymph * agg
        ok = (tis > 0.0) & (arch < thr) & (c.u(2) < dens_l * (1 - 0.8 * nrm))
        cc = c.take(ok)
        cc = cc.take(self._free(cc.x, cc.y))
        if len(cc):
            r = 2.4 + 0.6 * cc.u(3)
            nuc.add(cc.x, cc.y, r, r * 0.92, 0.0, h=1.9, e=0.2)
        # fibroblasts: thin, elongated, aligned with the fibres
        c = self._cells(b, 22.0, 12, jitter=0.8)
        f = self._at(c.x, c.y)
        ok = (f["tis"] > 0.0) & (f["arch"] < thr) & (c.u(2) < 0.4 * (1 - f["nrm"]))
        cc = c.take(ok)
        cc = cc.take(self._free(cc.x, cc.y))
        if len(cc):
            ang = math.pi * value_noise_points(cc.x, cc.y, 220.0, mix_key(self.key, 13))
            nuc.add(cc.x, cc.y, 5.5 + 2 * cc.u(3), 1.4, ang, h=1.25, e=0.2)
        # normal lung: pneumocytes on the septa, macrophages in the air spaces, pigment
        c = self._cells(b, 14.0, 14, jitter=0.8)
        if len(c):
            f = self._at(c.x, c.y)
            nrm, tis = f["nrm"], f["tis"]
            cand = c.take((tis > 0.0) & (nrm > 0.3))
            cand = cand.take(self._free(cand.x, cand.y))
            if len(cand):
                dist = self._septa_points(cand.x, cand.y, b)
                on = cand.take((dist < 3.5) & (cand.u(3) < 0.6))
                if len(on):
                    nuc.add(on.x, on.y, 3.4, 2.0, on.u(4) * math.pi, h=1.3, e=0.2)
                mac = cand.take((dist > 15) & (cand.u(5) < 0.02))
                if len(mac):
                    nuc.add(mac.x, mac.y, 7.0, 6.0, 0.0, e=0.45, d=0.12, h=0.1)
                    nuc.add(mac.x + 1.5, mac.y, 2.8, 2.4, 0.0, h=1.2)
            pig = c.take((tis > 0.0) & (c.u(6) < 0.01 + 0.02 * nrm))
            pig = pig.take(self._free(pig.x, pig.y))
            if len(pig):
                nuc.add(pig.x, pig.y, 1.2 + 2.5 * pig.u(7), 1.0 + 1.8 * pig.u(8), pig.u(9) * math.pi, d=1.8, h=0.2)
        # spread through air spaces: small tumour clusters floating in alveoli near the tumour
        if sc.case.stas == "present":
            c = self._cells(b, 90.0, 15, jitter=0.8)
            if len(c):
                f = self._at(c.x, c.y)
                nrm = f["nrm"]
                ok = (f["tis"] > 0.0) & (nrm > 0.4) & (nrm < 0.99) & (c.u(2) < 0.6)
                c = c.take(ok)
                if len(c):
                    c = c.take(self._septa_points(c.x, c.y, b) > 20.0)
                for j in range(5):
                    a = 2 * math.pi * c.u(10 + j)
                    rr = 7.0 * c.u(20 + j)
                    px, py = c.x + rr * np.cos(a), c.y + rr * np.sin(a)
                    nuc.add(px, py, 6.0, 5.0, a, e=0.4, h=0.08)
                    nuc.add(px, py, 3.6, 3.0, a, h=1.3, e=0.2)

    def _vessels(self, nuc: Splats, over: _Overlay, xs, ys, ps, x0, y0, x1, y1) -> None:
        for vi, v in enumerate(self.scene.vessels):
            reach = v.radius + v.wall + 4
            if v.x + reach < x0 or v.x - reach > x1 or v.y + reach < y0 or v.y - reach > y1:
                continue
            key = mix_key(self.key, 400, vi)
            i0, i1 = np.searchsorted(xs, [v.x - reach, v.x + reach])
            j0, j1 = np.searchsorted(ys, [v.y - reach, v.y + reach])
            if i1 > i0 and j1 > j0:
                dx = xs[None, i0:i1] - v.x
                dy = ys[j0:j1, None] - v.y
                r = np.sqrt(dx * dx + dy * dy * 1.3)
                e = max(ps, 0.8)
                lumen = np.clip((v.radius - r) / e + 0.5, 0, 1)
                whole = np.clip((v.radius + v.wall - r) / e + 0.5, 0, 1)
                wall = whole - lumen
                over.replace(
                    (slice(j0, j1), slice(i0, i1)), whole, e=wall * 1.0 + lumen * 0.10, h=wall * 0.10, r=lumen * 0.12
                )
            # red blood cells filling part of the lumen
            m = int(min(400, (v.radius / 4.2) ** 2 * (0.35 if v.invaded else 0.8)))
            kk = np.arange(m)
            ra = v.radius * 0.95 * np.sqrt(hash_u01(kk, 5, key))
            aa = 2 * math.pi * hash_u01(kk, 6, key)
            nuc.add(v.x + ra * np.cos(aa), v.y + ra * np.sin(aa) / math.sqrt(1.3), 3.6, 3.3, aa, r=0.5, e=0.12)
            n = max(8, int(2 * math.pi * v.radius / 14))
            k = np.arange(n)
            a = 2 * math.pi * (k + 0.5 * hash_u01(k, 1, key)) / n
            nuc.add(
                v.x + v.radius * np.cos(a),
                v.y + (v.radius / math.sqrt(1.3)) * np.sin(a),
                5.0,
                1.3,
                a + math.pi / 2,
                h=1.3,
                e=0.2,
            )
            rw = v.radius + v.wall * 0.5
            nuc.add(
                v.x + rw * np.cos(a + 0.3),
                v.y + (rw / math.sqrt(1.3)) * np.sin(a + 0.3),
                5.5,
                1.5,
                a + 0.3 + math.pi / 2,
                h=1.1,
                e=0.2,
            )
            if v.invaded:  # a tumour embolus: a cluster of class-specific cells in the lumen
                m = 22
                kk = np.arange(m)
                ra = 0.62 * v.radius * np.sqrt(hash_u01(kk, 2, key))
                aa = 2 * math.pi * hash_u01(kk, 3, key)
                px, py = v.x + ra * np.cos(aa), v.y + ra * np.sin(aa) / math.sqrt(1.3)
                if self.st.is_lusc:
                    nuc.add(px, py, 9.0, 8.0, aa, e=0.45, h=0.05)
                    nuc.add(px, py, 4.4, 3.6, aa, h=1.1, e=0.2, rim=0.45)
                else:
                    nuc.add(px, py, 6.0, 5.0, aa, e=0.3, h=0.1)
                    nuc.add(px, py, 3.8, 2.3, aa, h=1.35, e=0.2)

    def _pleura(self, over: _Overlay, xs, ys, m, ps) -> None:
        k = mix_key(self.key, 16)
        elastic = 1.0 - smoothstep(0.0, 0.08 * max(1.0, ps), np.abs(value_noise_grid(xs, ys, 40.0, k)))
        over.replace(
            (slice(None), slice(None)),
            m,
            e=m * (0.95 + 0.25 * value_noise_grid(xs, ys, 9.0, k + 1)),
            h=m * (0.10 + 0.45 * elastic / max(1.0, ps) ** 0.5),
        )

    def _muscle(self, over: _Overlay, xs, ys, m, ps) -> None:
        k = mix_key(self.key, 17)
        ang = float(hash_u01(1, 2, k)) * math.pi
        proj = xs[None, :] * math.cos(ang) + ys[:, None] * math.sin(ang)
        warp = 12.0 * value_noise_grid(xs, ys, 90.0, k)
        fib = 0.5 + 0.5 * np.cos(2 * math.pi * (proj + warp) / 45.0)
        bundles = smoothstep(0.1, 0.3, fib) if ps < 8 else np.full_like(fib, 0.75)
        over.replace((slice(None), slice(None)), m, e=m * (0.3 + 0.85 * bundles), r=m * 0.18 * bundles, h=m * 0.06)

    # ------------------------------------------------------------------ artefacts and colour
    def _pen(self, xs, ys) -> np.ndarray | None:
        p = self.scene.pen
        if p is None or xs[-1] < p["x0"] or xs[0] > p["x1"]:
            return None
        curve = p["y0"] + p["amp"] * np.sin(2 * math.pi * xs / p["period"] + p["phase"])
        if ys[0] > curve.max() + p["half_width"] + 5 or ys[-1] < curve.min() - p["half_width"] - 5:
            return None
        d = np.abs(ys[:, None] - curve[None, :])
        inx = ((xs >= p["x0"]) & (xs <= p["x1"]))[None, :]
        taper = smoothstep(p["x0"], p["x0"] + 150.0, xs) * (1.0 - smoothstep(p["x1"] - 150.0, p["x1"], xs))
        hw = p["half_width"] * (0.5 + 0.5 * taper) * (1.0 + 0.15 * value_noise_grid(xs, ys[:1], 300.0, self.key))
        m = np.clip((hw - d) / 8.0, 0, 1) * inx * (0.85 + 0.15 * value_noise_grid(xs, ys, 40.0, self.key + 1))
        if not m.any():
            return None
        return (m[..., None] * p["od"][None, None, :]).astype(np.float32)

    def _fold(self, dens, xs, ys, A) -> None:
        fd = self.scene.fold
        d = np.abs(xs[None, :] * fd["nx"] + ys[:, None] * fd["ny"] - fd["c"])
        m = np.clip((fd["half_width"] - d) / 4.0, 0, 1) * A
        if m.any():
            dens[:4] *= (1.0 + 0.9 * m)[None]

    def _compose(self, dens, pen, tile_key: int, f: int) -> np.ndarray:
        T = self.T
        od = (dens[:4].reshape(4, -1).T @ self._od).reshape(T, T, 3)
        if pen is not None:
            od += pen
        np.negative(od, out=od)
        np.exp(od, out=od)
        od *= self._glass_rgb[None, None, :]
        od += (2.2 / f**0.5) * self._bank(self._noise, tile_key)[..., None] + 0.5
        np.clip(od, 0, 255, out=od)
        return od.astype(np.uint8)


class _Overlay:
    """Structures that replace what lies below them: ``dens = dens * (1 - mask) + added``."""

    def __init__(self, T: int):
        self.mask = np.zeros((T, T), np.float32)
        self.add = np.zeros((4, T, T), np.float32)
        self.used = False

    def replace(self, sl, mask, h=0.0, e=0.0, r=0.0) -> None:
        self.used = True
        np.maximum(self.mask[sl], mask, out=self.mask[sl])
        for ch, v in ((H, h), (E, e), (R, r)):
            if not np.isscalar(v) or v:
                self.add[ch][sl] += v

    def apply(self, dens: np.ndarray) -> None:
        if self.used:
            dens[:4] *= (1.0 - np.clip(self.mask, 0, 1))[None]
            dens[:4] += self.add

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

Naming: ``pixel_size`` (``ps`` in :meth:`Splats.draw`) is the size of one pixel of the level being
drawn, in microns; ``xs``/``ys`` are the tile's pixel-centre coordinates in microns; ``dens`` is the
(6, size, size) array of stain densities indexed by the channel constants below.
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
# density channels: haematoxylin, eosin, red (blood, keratin), dark pigment; then C, C2: the sum and
# the sum of squares of the cell cones (see Splats)
H, E, R, D, C, C2 = range(6)


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
        """One uniform [0, 1) number per cell for random channel ``ch`` (a pure hash of the grid cell)."""
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
        """Centres (x, y) and semi-axes (a, b) in microns, angle ``theta`` in radians, densities per channel
        (h, e, r, d, coverage c), rim darkening (0..1)."""
        x = np.atleast_1d(np.asarray(x, np.float32))
        count = len(x)
        if count == 0:
            return
        # one row per attribute; the coverage amplitude c twice (channels C and C2)
        block = np.empty((13, count), np.float32)
        for row, values in enumerate((x, y, a, b, theta, h, e, r, d, c, c, rim, float(cone))):
            block[row] = values
        self.parts.append(block)

    def draw(self, dens: np.ndarray, x0: float, y0: float, ps: float) -> None:
        """Accumulate into ``dens`` (6, T, T); tile origin (x0, y0) in microns, pixel size ``ps``.

        Splats are batched by reach (half-width of their pixel window) and profile, so each batch is
        one (splats, window, window) array.
        """
        if not self.parts:
            return
        x, y, semi_a, semi_b, theta, *amplitudes, rim, cone = np.concatenate(self.parts, axis=1)
        size = dens.shape[1]
        # centres and semi-axes in pixels
        cx = (x - x0) / ps - 0.5
        cy = (y - y0) / ps - 0.5
        semi_a = np.maximum(semi_a / ps, 0.45)
        semi_b = np.maximum(semi_b / ps, 0.45)
        reach = np.ceil(np.maximum(semi_a, semi_b) + SOFT_PX + 0.5).astype(np.int64)
        visible = (cx + reach >= 0) & (cx - reach < size) & (cy + reach >= 0) & (cy - reach < size)
        if not visible.any():
            return
        bucket = np.minimum(np.ceil(np.log2(np.maximum(reach, 1)) * 2).astype(np.int64), 20) * 2 + (cone > 0)
        bucket[~visible] = -1
        flat_dens = dens.reshape(dens.shape[0], -1)
        cos, sin = np.cos(theta), np.sin(theta)
        for bucket_id in np.unique(bucket):
            if bucket_id < 0:
                continue
            members = np.flatnonzero(bucket == bucket_id)
            half = int(reach[members].max())
            offsets = np.arange(-half, half + 1)
            round_cx = np.rint(cx[members]).astype(np.int64)
            round_cy = np.rint(cy[members]).astype(np.int64)
            cols = round_cx[:, None] + offsets  # pixel columns of each splat's window
            rows = round_cy[:, None] + offsets
            dx = (cols - cx[members, None]).astype(np.float32)[:, None, :]
            dy = (rows - cy[members, None]).astype(np.float32)[:, :, None]
            inv_a = (1.0 / semi_a[members])[:, None, None]
            inv_b = (1.0 / semi_b[members])[:, None, None]
            cos_t = cos[members][:, None, None]
            sin_t = sin[members][:, None, None]
            # (u, v): position in the splat's frame, in units of its semi-axes
            u = dx * (cos_t * inv_a) + dy * (sin_t * inv_a)
            v = dy * (cos_t * inv_b) - dx * (sin_t * inv_b)
            u *= u
            v *= v
            u += v
            rho2 = u  # squared elliptical radius (computed in place in u)
            if bucket_id % 2:  # cone profile
                profile = 1.0 - rho2
            else:  # flat, edge ~SOFT_PX wide: (1 - d^2)/2 ~ 1 - d
                profile = (1.0 - rho2) * (semi_b[members] * (0.5 / SOFT_PX))[:, None, None] + 0.5
            np.clip(profile, 0.0, 1.0, out=profile)
            rim_sel = rim[members]
            if rim_sel.any():
                np.minimum(rho2, 1.0, out=rho2)
                rim_sel = rim_sel[:, None, None]
                profile *= (1.0 - rim_sel) + (1.6 * rim_sel) * rho2
            inside = profile > 0
            inside &= ((cols >= 0) & (cols < size))[:, None, :]
            inside &= ((rows >= 0) & (rows < size))[:, :, None]
            pixel_index = ((rows * size)[:, :, None] + cols[:, None, :])[inside]
            weights = profile[inside]
            per_splat = inside.sum(axis=(1, 2))
            for channel, amplitude in enumerate(amplitudes):
                amp_sel = amplitude[members]
                if amp_sel.any():
                    values = weights * weights if channel == C2 else weights
                    scaled = values if np.all(amp_sel == 1.0) else values * np.repeat(amp_sel, per_splat)
                    flat_dens[channel] += np.bincount(pixel_index, weights=scaled, minlength=size * size).astype(
                        np.float32
                    )


class TileRenderer:
    """Draws tiles of one scene; see the module docstring."""

    def __init__(self, scene: Scene, tile: int = TILE):
        self.scene = scene
        self.style = scene.style
        self.tile_size = int(tile)
        self.key = scene.key
        # small banks of pixel noise (sensor noise, chromatin grain); a tile picks one by its hash
        rng = np.random.default_rng([scene.case.seed, 77])
        size = self.tile_size
        self._noise = rng.normal(0.0, 1.0, (4, size, size)).astype(np.float32)
        fine = rng.normal(0.0, 1.0, (4, size + 1, size + 1)).astype(np.float32)
        self._grain = (fine[:, :-1, :-1] + fine[:, 1:, :-1] + fine[:, :-1, 1:] + fine[:, 1:, 1:]) * 0.5
        self._glass_tiles: dict[int, list[np.ndarray]] = {}
        self._stain_od = np.asarray(self.style.od, np.float32)
        self._strip_key: tuple[int, int] | None = None
        vessels = scene.vessels
        self._vessel_xyr = np.array(
            [[vessel.x, vessel.y, vessel.radius + vessel.wall] for vessel in vessels], np.float64
        ).reshape(-1, 3)
        self._exclusions: list[np.ndarray] = []  # (x, y, radius) rows that later cells keep out of
        self._glass_rgb = np.asarray(self.style.glass, np.float32)

    # ------------------------------------------------------------------ helpers
    def _bank_variant(self, bank: np.ndarray, tile_key: int) -> np.ndarray:
        """One of the bank's four noise planes, flipped and/or transposed by the bits of ``tile_key``."""
        plane = bank[tile_key & 3]
        if tile_key & 4:
            plane = plane[::-1]
        if tile_key & 8:
            plane = plane[:, ::-1]
        return plane.T if tile_key & 16 else plane

    def _glass_tile(self, level: int, tile_key: int) -> np.ndarray:
        """A tile of bare glass (with sensor noise), cached per level."""
        if level not in self._glass_tiles:
            noise_amp = 2.2 / (2**level) ** 0.5
            self._glass_tiles[level] = [
                np.clip(self._glass_rgb[None, None, :] + noise_amp * noise[..., None] + 0.5, 0, 255).astype(np.uint8)
                for noise in self._noise
            ]
        glass = self._glass_tiles[level][tile_key & 3]
        if tile_key & 4:
            glass = glass[::-1]
        if tile_key & 8:
            glass = glass[:, ::-1]
        return np.ascontiguousarray(glass)

    def _jittered_cells(
        self, bounds: tuple[float, float, float, float], spacing: float, salt: int, jitter: float = 0.8
    ) -> Cells:
        """One candidate per cell of a ``spacing``-micron grid, jittered, inside ``bounds`` (x0, y0, x1, y1).

        ``salt`` tells the kinds of primitives apart (each gets its own random numbers).
        """
        x0, y0, x1, y1 = bounds
        col_range = np.arange(math.floor(x0 / spacing), math.floor(x1 / spacing) + 1)
        row_range = np.arange(math.floor(y0 / spacing), math.floor(y1 / spacing) + 1)
        grid_ix = np.repeat(col_range[None, :], len(row_range), 0).ravel()
        grid_iy = np.repeat(row_range[:, None], len(col_range), 1).ravel()
        key = mix_key(self.key, 100 + salt)
        cells = Cells(grid_ix, grid_iy, np.zeros(0), np.zeros(0), key, coord_base(grid_ix, grid_iy))
        cells.x = (grid_ix + 0.5 + jitter * (cells.u(0) - 0.5)) * spacing
        cells.y = (grid_iy + 0.5 + jitter * (cells.u(1) - 0.5)) * spacing
        inside = (cells.x >= x0) & (cells.x < x1) & (cells.y >= y0) & (cells.y < y1)
        return cells.take(inside)

    def _fields_at(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """Bilinear lookup of all lattice fields at points (microns): name -> values."""
        stack = self._field_stack
        gx = np.clip(x / self._lattice_um - self._lattice_col0, 0, stack.shape[2] - 1.001)
        gy = np.clip(y / self._lattice_um - self._lattice_row0, 0, stack.shape[1] - 1.001)
        ix = gx.astype(np.int64)
        iy = gy.astype(np.int64)
        fx = (gx - ix).astype(np.float32)
        fy = (gy - iy).astype(np.float32)
        top = stack[:, iy, ix] * (1 - fx) + stack[:, iy, ix + 1] * fx
        bottom = stack[:, iy + 1, ix] * (1 - fx) + stack[:, iy + 1, ix + 1] * fx
        values = top * (1 - fy) + bottom * fy
        return dict(zip(self._field_names, values))

    # ------------------------------------------------------------------ alveoli
    def _alveolar_sites(self, x0: float, y0: float, x1: float, y1: float) -> Cells:
        spacing, margin = 105.0, 140.0
        return self._jittered_cells((x0 - margin, y0 - margin, x1 + margin, y1 + margin), spacing, 20, jitter=0.9)

    def _warp(self, x: np.ndarray, y: np.ndarray, grid: bool) -> tuple[np.ndarray, np.ndarray]:
        """Domain warp (microns) that bends the alveolar walls."""
        key = mix_key(self.key, 22)
        if grid:
            warp_x = value_noise_grid(x, y, 70.0, key)
            warp_y = value_noise_grid(x, y, 70.0, key + 1)
            return (x.astype(np.float32)[None, :] + 16.0 * warp_x), (y.astype(np.float32)[:, None] + 16.0 * warp_y)
        return x + 16.0 * value_noise_points(x, y, 70.0, key), y + 16.0 * value_noise_points(x, y, 70.0, key + 1)

    def _septa_grid(self, xs: np.ndarray, ys: np.ndarray, pixel_size: float) -> np.ndarray:
        """Alveolar walls (0..1): the edges of a warped Voronoi diagram of jittered sites."""
        sites = self._alveolar_sites(xs[0], ys[0], xs[-1], ys[-1])
        warped_x, warped_y = self._warp(xs, ys, True)
        nearest_d2 = np.full((len(ys), len(xs)), 1e12, np.float32)  # squared distance to the nearest site
        second_d2 = nearest_d2.copy()  # ... and to the second nearest
        for site_x, site_y in zip(sites.x.astype(np.float32), sites.y.astype(np.float32)):
            dx = warped_x - site_x
            dist2 = dx * dx
            dy = warped_y - site_y
            dist2 += dy * dy
            np.minimum(second_d2, np.maximum(nearest_d2, dist2), out=second_d2)
            np.minimum(nearest_d2, dist2, out=nearest_d2)
        edge = (np.sqrt(second_d2) - np.sqrt(nearest_d2)) * 0.5  # ~ distance to the nearest wall
        key = mix_key(self.key, 21)
        thickness = 1.8 + 1.6 * value_noise_grid(xs, ys, 60.0, key) ** 2
        soft = max(0.5 * pixel_size, 0.4)
        wall = 1.0 - smoothstep(0.0, 1.0, (edge - thickness) / (2 * soft) + 0.5)
        openings = smoothstep(-0.45, -0.2, value_noise_grid(xs, ys, 85.0, key + 1))  # alveolar ducts
        return wall * openings * np.minimum(1.0, 2.0 / max(pixel_size, 2.0))

    def _septa_points(self, x: np.ndarray, y: np.ndarray, bounds) -> np.ndarray:
        """Distance (microns) from points to the nearest alveolar wall."""
        sites = self._alveolar_sites(*bounds)
        if len(sites) < 2 or len(x) == 0:
            return np.full(len(x), 1e3, np.float32)
        warped_x, warped_y = self._warp(x, y, False)
        dist = np.sqrt((warped_x[:, None] - sites.x[None, :]) ** 2 + (warped_y[:, None] - sites.y[None, :]) ** 2)
        dist.sort(axis=1)
        return (dist[:, 1] - dist[:, 0]) * 0.5

    def _strip(self, level: int, oy: int) -> tuple[np.ndarray, int, int]:
        """Lattice fields for a whole row of tiles (cached: tiles come row by row).

        Returns (fields stacked in ``self._field_names`` order, lattice column and row index of
        the first node). Memory grows with the slide's width only (a few bytes per lattice node).
        """
        if self._strip_key != (level, oy):
            scene = self.scene
            pixel_size = scene.mpp * 2**level
            lattice_um = LATTICE_PX * pixel_size
            y0, y1 = oy * pixel_size, (oy + self.tile_size) * pixel_size
            col0 = math.floor(-MARGIN_UM / lattice_um)
            row0 = math.floor((y0 - MARGIN_UM) / lattice_um)
            lattice_x = (
                np.arange(col0, math.ceil((scene.wu + self.tile_size * pixel_size + MARGIN_UM) / lattice_um) + 2)
                * lattice_um
            )
            lattice_y = np.arange(row0, math.ceil((y1 + MARGIN_UM) / lattice_um) + 2) * lattice_um
            fields = scene.fields(lattice_x[None, :], lattice_y[:, None])
            self._field_names = list(fields)
            self._strip_value = (np.stack([fields[name] for name in self._field_names]), col0, row0)
            self._strip_key = (level, oy)
        return self._strip_value

    # ------------------------------------------------------------------ tile
    def render(self, level: int, ox: int, oy: int) -> np.ndarray:
        """RGB uint8 tile (T x T x 3) at ``level`` whose top-left pixel is (ox, oy) in level pixels."""
        scene, style, size = self.scene, self.style, self.tile_size
        scale = 2**level  # level-0 pixels per pixel of this level
        pixel_size = scene.mpp * scale
        x0, y0 = ox * pixel_size, oy * pixel_size
        x1, y1 = x0 + size * pixel_size, y0 + size * pixel_size
        xs = (ox + np.arange(size) + 0.5) * pixel_size
        ys = (oy + np.arange(size) + 0.5) * pixel_size
        tile_key = mix_key(self.key, level, ox, oy)
        pen_od = self._pen_od(xs, ys)
        # coarse lattice of the smooth fields around the tile (cut from the tile row's strip)
        lattice_um = LATTICE_PX * pixel_size
        self._lattice_um = lattice_um
        strip, strip_col0, strip_row0 = self._strip(level, oy)
        self._lattice_col0 = math.floor((x0 - MARGIN_UM) / lattice_um)
        self._lattice_row0 = strip_row0
        first_col = self._lattice_col0 - strip_col0
        self._field_stack = strip[
            :, :, first_col : first_col + math.ceil((x1 + MARGIN_UM) / lattice_um) + 2 - self._lattice_col0
        ]
        self._lattice = dict(zip(self._field_names, self._field_stack))
        dens = np.zeros((6, size, size), np.float32)
        if float(self._lattice["tis"].max()) < -0.03:
            if pen_od is None:
                return self._glass_tile(level, tile_key)
            return self._compose(dens, pen_od, tile_key, scale)
        weights_x, knot0_x = bilinear_matrix(xs, lattice_um, smooth=False)
        weights_y, knot0_y = bilinear_matrix(ys, lattice_um, smooth=False)
        start_col, start_row = knot0_x - self._lattice_col0, knot0_y - self._lattice_row0

        def upsample(name: str) -> np.ndarray:
            """The lattice field ``name`` at every pixel of the tile."""
            coarse = self._lattice[name][
                start_row : start_row + weights_y.shape[1], start_col : start_col + weights_x.shape[1]
            ]
            return weights_y @ coarse @ weights_x.T

        tissue_value = upsample("tis") + 0.02 * value_noise_grid(xs, ys, 24.0, mix_key(self.key, 7))
        in_tissue = smoothstep(-0.004, 0.004, tissue_value).astype(np.float32)
        normal = np.clip(upsample("nrm"), 0, 1) * in_tissue

        # --- background: stroma (tumour area) and alveolar septa (normal lung)
        stroma_key = mix_key(self.key, 8)
        fibres = value_noise_grid(xs, ys, 22.0, stroma_key)
        fine_fibres = value_noise_grid(xs, ys, 9.0, stroma_key + 1) if pixel_size < 3.0 else 0.0
        ridge = (1.0 - np.abs(fibres + 0.4 * fine_fibres)) ** 3
        stroma = style.stroma_e * (0.45 + 0.9 * ridge)
        septa = self._septa_grid(xs, ys, pixel_size) if normal.max() > 0.02 else 0.0
        dens[E] = in_tissue * ((1.0 - normal) * stroma + normal * (0.04 + 0.8 * septa))
        dens[H] = in_tissue * ((1.0 - normal) * style.stroma_h * (0.7 + 0.6 * ridge) + normal * 0.14 * septa)
        if scene.bands:
            pleura, wall = upsample("pleura") * in_tissue, upsample("wall") * in_tissue
        else:
            pleura = wall = None

        bounds = (x0 - MARGIN_UM, y0 - MARGIN_UM, x1 + MARGIN_UM, y1 + MARGIN_UM)
        # --- cell mosaics (coverage), which replace the stroma where the cells are
        coverage = Splats()
        nuclei = Splats()
        overlay = _Overlay(size)
        self._exclusions = [self._vessel_xyr]
        own, other = (self._squamous, self._glandular) if style.is_lusc else (self._glandular, self._squamous)
        own(coverage, nuclei, overlay, bounds, xs, ys, pixel_size)
        mimic = scene.mimic_share > 0 and float(self._lattice["mim"].max()) > 0.0
        if mimic:  # patches of the other class's morphology (Difficulty.overlap)
            other(coverage, nuclei, overlay, bounds, xs, ys, pixel_size, mimic=True)
        if coverage.parts:
            coverage.draw(dens, x0, y0, pixel_size)
            cover = dens[C]
            fill = smoothstep(0.22, 0.45, cover)
            dominance = dens[C2] / np.maximum(cover * cover, 1e-6)
            membrane = (
                smoothstep(0.3, 0.42, dominance)
                * fill
                * (1.0 - smoothstep(0.5, 0.5 + 0.12 * max(1.0, pixel_size / 0.5), dominance))
            )
            cytoplasm_e = style.cyto_e if style.is_lusc else 0.5
            if mimic:  # squamous cytoplasm where squamous cells are drawn
                mimicry = np.clip(upsample("mim"), 0, 1)
                cytoplasm_e = 0.5 + (style.cyto_e - 0.5) * ((1 - mimicry) if style.is_lusc else mimicry)
            dens[E] = dens[E] * (1 - fill) + fill * cytoplasm_e * (0.6 + 0.1 * np.abs(fibres)) + membrane * 0.3
            dens[H] = dens[H] * (1 - fill) + fill * 0.07 + membrane * 0.08
        # --- structures that replace what is below them
        if pleura is not None and pleura.max() > 0:
            self._pleura(overlay, xs, ys, pleura, pixel_size)
        if wall is not None and wall.max() > 0:
            self._muscle(overlay, xs, ys, wall, pixel_size)
        self._vessels(nuclei, overlay, xs, ys, pixel_size, x0, y0, x1, y1)
        overlay.apply(dens)
        # --- nuclei and other small objects
        self._shared_cells(nuclei, bounds, pixel_size)
        nuclei.draw(dens, x0, y0, pixel_size)
        dens[:4] *= upsample("mod")[None]
        dens[H] *= 1.0 + (0.25 / scale**0.5) * self._bank_variant(self._grain, tile_key >> 5)
        if scene.fold is not None:
            self._fold(dens, xs, ys, in_tissue)
        return self._compose(dens, pen_od, tile_key, scale)

    # ------------------------------------------------------------------ class morphology
    def _morphology_region(self, fields: dict[str, np.ndarray], mimic: bool) -> np.ndarray | bool:
        """Where a morphology function draws: its own class's outside the mimicry patches, the other's inside."""
        if not mimic and self.scene.mimic_share <= 0:
            return True
        return fields["mim"] >= 0.5 if mimic else fields["mim"] < 0.5

    def _squamous(
        self, coverage: Splats, nuclei: Splats, overlay: _Overlay, bounds, xs, ys, pixel_size, mimic: bool = False
    ) -> None:
        style = self.style
        invades_pleura = self.scene.case.pleural_invasion == "present"
        # keratin pearls (cells are kept out of them)
        pearls = self._jittered_cells(bounds, style.pearl_spacing, 1, jitter=0.5)
        if len(pearls):
            fields = self._fields_at(pearls.x, pearls.y)
            ok = (
                (fields["tis"] > 0.03)
                & (fields["nrm"] < 0.3)
                & (fields["arch"] > style.nest_thr + 0.15)
                & (pearls.u(2) < style.pearl_p)
                & (fields["pleura"] < 0.1)
                & self._morphology_region(fields, mimic)
            )
            pearls = pearls.take(ok)
        lo, hi = style.pearl_radius
        pearl_radius = lo + (hi - lo) * pearls.u(3) if len(pearls) else np.zeros(0)
        if mimic:  # drawn after the slide's own morphology: keep clear of its glands
            keep = self._clear_of_structures(pearls.x, pearls.y, pearl_radius)
            pearls, pearl_radius = pearls.take(keep), pearl_radius[keep]
        self._exclusions.append(np.stack([pearls.x, pearls.y, pearl_radius * 1.1], 1))
        for i in range(len(pearls)):
            self._pearl(
                nuclei,
                overlay,
                float(pearls.x[i]),
                float(pearls.y[i]),
                float(pearl_radius[i]),
                xs,
                ys,
                pixel_size,
                int(pearls.ix[i]),
                int(pearls.iy[i]),
            )
        # the squamous cells: polygonal mosaic, central vesicular nuclei
        cells = self._jittered_cells(bounds, style.cell_spacing, 2, jitter=0.6)
        fields = self._fields_at(cells.x, cells.y)
        ok = (
            (fields["tis"] > 0.0)
            & (cells.u(2) > fields["nrm"])
            & (fields["arch"] > style.nest_thr)
            & self._morphology_region(fields, mimic)
        )
        if not invades_pleura:
            ok &= fields["pleura"] < 0.5
        for i in range(len(pearls)):
            ok &= np.hypot(cells.x - pearls.x[i], cells.y - pearls.y[i]) > pearl_radius[i] + 0.5 * style.cell_spacing
        if mimic:
            ok &= self._outside_structures(cells.x, cells.y)
        cells = cells.take(ok)
        if len(cells) == 0:
            return
        cell_radius = style.cell_spacing * 0.8
        coverage.add(
            cells.x,
            cells.y,
            cell_radius,
            cell_radius * (0.85 + 0.15 * cells.u(5)),
            cells.u(6) * math.pi,
            c=1.0,
            cone=True,
        )
        keratinised = cells.u(3) < style.keratin_p
        keratin_cells = cells.take(keratinised)
        if len(keratin_cells):  # single-cell keratinisation: glassy, bright eosinophilic cytoplasm
            nuclei.add(
                keratin_cells.x,
                keratin_cells.y,
                0.4 * style.cell_spacing,
                0.36 * style.cell_spacing,
                0.0,
                e=0.22,
                r=0.05,
            )
        pleomorphism = style.pleomorphism
        nuc_radius = style.nuc_radius * (1.0 + pleomorphism * (2 * cells.u(7) - 1)) * np.where(keratinised, 0.55, 1.0)
        offset_x = (cells.u(8) - 0.5) * 2.5
        offset_y = (cells.u(9) - 0.5) * 2.5
        nuclei.add(
            cells.x + offset_x,
            cells.y + offset_y,
            nuc_radius,
            nuc_radius * (0.78 + 0.2 * cells.u(10)),
            cells.u(11) * math.pi,
            h=np.where(keratinised, 1.7, 1.0 + 0.3 * cells.u(12)) * (1 + 0.08 * style.grade),
            e=0.25,
            rim=np.where(keratinised, 0.0, 0.45),
        )
        # a dark nucleolus in some vesicular nuclei
        nucleolated = cells.take(~keratinised & (cells.u(13) < 0.5))
        if len(nucleolated):
            nuclei.add(
                nucleolated.x + (nucleolated.u(8) - 0.5) * 2.5,
                nucleolated.y + (nucleolated.u(9) - 0.5) * 2.5,
                0.9,
                0.9,
                0.0,
                h=0.9,
                e=0.3,
            )

    def _pearl(self, nuclei: Splats, overlay: _Overlay, cx, cy, radius, xs, ys, pixel_size, ix, iy) -> None:
        """A keratin pearl of ``radius`` microns centred at (cx, cy); (ix, iy): its grid cell."""
        key = mix_key(self.key, 200, ix, iy)
        reach = radius * 1.1 + 4.0
        col0, col1 = np.searchsorted(xs, [cx - reach, cx + reach])
        row0, row1 = np.searchsorted(ys, [cy - reach, cy + reach])
        if col1 > col0 and row1 > row0:
            dx = xs[None, col0:col1] - cx
            dy = ys[row0:row1, None] - cy
            dist = np.sqrt(dx * dx + dy * dy * 1.15)
            wobble = value_noise_grid(xs[col0:col1], ys[row0:row1], 14.0, key)
            edge = radius * (1.0 + 0.08 * value_noise_grid(xs[col0:col1], ys[row0:row1], 0.6 * radius, key + 1))
            inside = np.clip((edge - dist) / max(pixel_size, 0.8) + 0.5, 0, 1).astype(np.float32)
            ring_period = 5.5 + 2.0 * float(hash_u01(ix, iy, key))
            ring = (
                0.5 + 0.5 * np.cos(2 * math.pi * dist / ring_period + 3.5 * wobble)
                if ring_period > 2.5 * pixel_size
                else 0.5
            )
            ring = 0.6 * ring + 0.4 * (0.5 + 0.5 * wobble)
            window = (slice(row0, row1), slice(col0, col1))
            overlay.replace(
                window, inside, e=inside * (0.62 + 0.28 * ring), r=inside * (0.12 + 0.06 * ring), h=inside * 0.03
            )
        # flattened, concentric nuclei at the rim and a few ghosts within
        n_rim = max(6, int(2 * math.pi * radius / 10.0))
        rim_index = np.arange(n_rim)
        rim_angle = 2 * math.pi * (rim_index + 0.4 * hash_u01(rim_index, 1, key)) / n_rim
        rim_radius = radius * (0.96 + 0.12 * hash_u01(rim_index, 2, key))
        nuclei.add(
            cx + rim_radius * np.cos(rim_angle),
            cy + rim_radius * np.sin(rim_angle) / math.sqrt(1.15),
            5.5,
            1.7,
            rim_angle + math.pi / 2,
            h=1.4,
            e=0.3,
        )
        n_ghosts = max(2, n_rim // 5)
        ghost_angle = 2 * math.pi * hash_u01(np.arange(n_ghosts), 3, key)
        ghost_radius = radius * 0.6 * hash_u01(np.arange(n_ghosts), 4, key)
        nuclei.add(
            cx + ghost_radius * np.cos(ghost_angle),
            cy + ghost_radius * np.sin(ghost_angle),
            3.0,
            1.1,
            ghost_angle + math.pi / 2,
            h=0.7,
            e=0.1,
        )

    def _glandular(
        self, coverage: Splats, nuclei: Splats, overlay: _Overlay, bounds, xs, ys, pixel_size, mimic: bool = False
    ) -> None:
        style = self.style
        invades_pleura = self.scene.case.pleural_invasion == "present"
        glands = self._jittered_cells(bounds, style.gland_spacing, 3, jitter=0.45)
        if len(glands):
            fields = self._fields_at(glands.x, glands.y)
            ok = (
                (fields["tis"] > 0.01)
                & (glands.u(2) > fields["nrm"])
                & (fields["arch"] < style.solid_thr - 0.03)
                & (glands.u(3) < style.gland_p)
                & self._morphology_region(fields, mimic)
            )
            if not invades_pleura:
                ok &= fields["pleura"] < 0.3
            glands = glands.take(ok)
        lo, hi = style.lumen_radius
        lumen_radius = lo + (hi - lo) * glands.u(4) if len(glands) else np.zeros(0)
        if mimic:  # drawn after the slide's own morphology: keep clear of its keratin pearls
            keep = self._clear_of_structures(glands.x, glands.y, lumen_radius + style.epi_thickness)
            glands, lumen_radius = glands.take(keep), lumen_radius[keep]
        outer = lumen_radius + style.epi_thickness
        self._exclusions.append(np.stack([glands.x, glands.y, (outer * (1 + style.gland_irregular * 1.2) + 2.0)], 1))
        for i in range(len(glands)):
            self._gland(nuclei, overlay, glands, i, float(lumen_radius[i]), xs, ys, pixel_size)
        # solid sheets (a mosaic of small cells) and stray tumour cells outside the glands
        cells = self._jittered_cells(bounds, 11.5, 4, jitter=0.7)
        fields = self._fields_at(cells.x, cells.y)
        solid = fields["arch"] > style.solid_thr
        ok = (
            (fields["tis"] > 0.0)
            & (cells.u(2) > fields["nrm"])
            & (solid | (cells.u(3) < style.stray_p))
            & self._morphology_region(fields, mimic)
        )
        if not invades_pleura:
            ok &= fields["pleura"] < 0.5
        for i in range(len(glands)):
            ok &= np.hypot(cells.x - glands.x[i], cells.y - glands.y[i]) > outer[i] * 1.2
        if mimic:
            ok &= self._outside_structures(cells.x, cells.y)
        cells = cells.take(ok)
        if len(cells):
            nuc_radius = 3.3 * (1 + 0.1 * style.grade) * (0.8 + 0.45 * cells.u(5))
            nuclei.add(
                cells.x,
                cells.y,
                nuc_radius,
                nuc_radius * (0.7 + 0.25 * cells.u(6)),
                cells.u(7) * math.pi,
                h=1.2 + 0.3 * cells.u(8),
                e=0.25,
                rim=0.2,
            )
            sheet = cells.take(solid[ok])
            if len(sheet):
                coverage.add(sheet.x, sheet.y, 9.6, 9.0, sheet.u(9) * math.pi, c=1.0, cone=True)

    def _gland(
        self, nuclei: Splats, overlay: _Overlay, glands: Cells, index: int, lumen_radius: float, xs, ys, pixel_size
    ) -> None:
        """Gland ``index`` of ``glands``: a lumen in an irregular ring of epithelium with basal nuclei."""
        style = self.style
        gland_seed = int(glands.ix[index]) * 7919 + int(glands.iy[index])
        rand = [float(value) for value in hash_u01(np.arange(8), gland_seed, mix_key(self.key, 300))]
        cx, cy = float(glands.x[index]), float(glands.y[index])
        irregular = style.gland_irregular
        aspect = 1.0 + irregular * 1.5 * rand[0]
        rotation = rand[1] * math.pi
        # amplitudes of the outline's 2nd and 3rd harmonics (oval and three-lobed distortion)
        harm2, harm3 = irregular * 0.45 * rand[2], irregular * 0.3 * rand[3]
        epi_thick = style.epi_thickness * (0.9 + 0.2 * rand[4])
        reach = (lumen_radius + epi_thick) * (1 + harm2 + harm3) * aspect + 3.0
        col0, col1 = np.searchsorted(xs, [cx - reach, cx + reach])
        row0, row1 = np.searchsorted(ys, [cy - reach, cy + reach])
        cos_r, sin_r = math.cos(rotation), math.sin(rotation)
        if col1 > col0 and row1 > row0:
            dx = xs[None, col0:col1] - cx
            dy = ys[row0:row1, None] - cy
            # (pu, pv): pixel position in the gland's rotated, aspect-corrected frame
            pu = dx * cos_r + dy * sin_r
            pv = (dy * cos_r - dx * sin_r) * aspect
            rho2 = pu * pu + pv * pv + 1e-6
            rho = np.sqrt(rho2)
            cos2 = (pu * pu - pv * pv) / rho2
            cos3 = (pu * pu * pu - 3 * pu * pv * pv) / (rho2 * rho)
            rho = rho * (1.0 + harm2 * cos2 + harm3 * cos3) / aspect**0.5
            soft = max(pixel_size, 0.8)
            lumen = np.clip((lumen_radius - rho) / soft + 0.5, 0, 1)
            gland = np.clip((lumen_radius + epi_thick - rho) / soft + 0.5, 0, 1)
            epi = gland - lumen
            apical = np.exp(-(((rho - lumen_radius) / 1.5) ** 2)) * epi  # brush border / apical cytoplasm
            mucin = 0.05 * (rand[5] > 0.6)
            overlay.replace(
                (slice(row0, row1), slice(col0, col1)),
                gland,
                e=epi * 0.50 + apical * 0.25 + lumen * mucin,
                h=epi * 0.18 + lumen * mucin,
            )
        # columnar cells: basal, radially elongated nuclei around the ring
        circumference = 2 * math.pi * (lumen_radius + 0.65 * epi_thick)
        n_nuclei = max(6, int(circumference / (7.0 - 0.6 * style.grade)))
        nucleus_index = np.arange(n_nuclei)
        angle_u = hash_u01(nucleus_index, gland_seed, mix_key(self.key, 301))
        depth_u = hash_u01(nucleus_index, gland_seed, mix_key(self.key, 302))
        theta = 2 * math.pi * (nucleus_index + 0.3 * angle_u) / n_nuclei
        pu, pv = np.cos(theta), np.sin(theta)  # each nucleus's direction in the gland's frame
        # outline: the distorted ring's radius in that direction, relative to a circle
        outline = (1.0 + harm2 * (pu * pu - pv * pv) + harm3 * (pu**3 - 3 * pu * pv * pv)) / aspect**0.5
        stratified = (depth_u < 0.12 * style.grade) * 0.3
        target = lumen_radius + epi_thick * (0.66 - stratified + 0.1 * depth_u)
        ring_radius = target / outline
        local_u, local_v = ring_radius * pu, ring_radius * pv / aspect
        nuc_x = cx + local_u * cos_r - local_v * sin_r
        nuc_y = cy + local_u * sin_r + local_v * cos_r
        angle = np.arctan2(nuc_y - cy, nuc_x - cx)
        enlarge = 1.0 + 0.12 * style.grade
        nuclei.add(nuc_x, nuc_y, 3.8 * enlarge, 2.1 * enlarge, angle, h=1.25 + 0.25 * angle_u, e=0.25)

    # ------------------------------------------------------------------ shared components
    def _clear_of_structures(self, x: np.ndarray, y: np.ndarray, radius: np.ndarray | float) -> np.ndarray:
        """True where a disc of ``radius`` at (x, y) overlaps no gland, keratin pearl or vessel near the tile."""
        structures = np.concatenate(self._exclusions, axis=0) if self._exclusions else np.zeros((0, 3))
        if len(structures) == 0 or len(x) == 0:
            return np.ones(len(x), bool)
        dist2 = (x[:, None] - structures[None, :, 0]) ** 2 + (y[:, None] - structures[None, :, 1]) ** 2
        return np.all(dist2 > (structures[None, :, 2] + np.reshape(radius, (-1, 1))) ** 2, axis=1)

    def _outside_structures(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """True where a point lies outside every gland, keratin pearl and vessel near the tile."""
        return self._clear_of_structures(x, y, 0.0)

    def _shared_cells(self, nuclei: Splats, bounds, pixel_size) -> None:
        """Cells of both classes: lymphocytes, fibroblasts, normal-lung cells, pigment and STAS tumour clusters."""
        style = self.style
        scene = self.scene
        tumour_thr = style.nest_thr if style.is_lusc else style.solid_thr
        # lymphocytes, in stroma, sometimes in aggregates
        cells = self._jittered_cells(bounds, 8.5, 10, jitter=0.8)
        fields = self._fields_at(cells.x, cells.y)
        tissue, arch, normal = fields["tis"], fields["arch"], fields["nrm"]
        aggregate = np.clip(value_noise_points(cells.x, cells.y, 280.0, mix_key(self.key, 11)) * 1.6 - 0.4, 0, 1)
        lymph_density = 0.05 + 0.6 * style.lymph * aggregate
        ok = (tissue > 0.0) & (arch < tumour_thr) & (cells.u(2) < lymph_density * (1 - 0.8 * normal))
        chosen = cells.take(ok)
        chosen = chosen.take(self._outside_structures(chosen.x, chosen.y))
        if len(chosen):
            radius = 2.4 + 0.6 * chosen.u(3)
            nuclei.add(chosen.x, chosen.y, radius, radius * 0.92, 0.0, h=1.9, e=0.2)
        # fibroblasts: thin, elongated, aligned with the fibres
        cells = self._jittered_cells(bounds, 22.0, 12, jitter=0.8)
        fields = self._fields_at(cells.x, cells.y)
        ok = (fields["tis"] > 0.0) & (fields["arch"] < tumour_thr) & (cells.u(2) < 0.4 * (1 - fields["nrm"]))
        chosen = cells.take(ok)
        chosen = chosen.take(self._outside_structures(chosen.x, chosen.y))
        if len(chosen):
            angle = math.pi * value_noise_points(chosen.x, chosen.y, 220.0, mix_key(self.key, 13))
            nuclei.add(chosen.x, chosen.y, 5.5 + 2 * chosen.u(3), 1.4, angle, h=1.25, e=0.2)
        # normal lung: pneumocytes on the septa, macrophages in the air spaces, pigment
        cells = self._jittered_cells(bounds, 14.0, 14, jitter=0.8)
        if len(cells):
            fields = self._fields_at(cells.x, cells.y)
            normal, tissue = fields["nrm"], fields["tis"]
            candidates = cells.take((tissue > 0.0) & (normal > 0.3))
            candidates = candidates.take(self._outside_structures(candidates.x, candidates.y))
            if len(candidates):
                dist = self._septa_points(candidates.x, candidates.y, bounds)
                pneumocytes = candidates.take((dist < 3.5) & (candidates.u(3) < 0.6))
                if len(pneumocytes):
                    nuclei.add(pneumocytes.x, pneumocytes.y, 3.4, 2.0, pneumocytes.u(4) * math.pi, h=1.3, e=0.2)
                macrophages = candidates.take((dist > 15) & (candidates.u(5) < 0.02))
                if len(macrophages):
                    nuclei.add(macrophages.x, macrophages.y, 7.0, 6.0, 0.0, e=0.45, d=0.12, h=0.1)
                    nuclei.add(macrophages.x + 1.5, macrophages.y, 2.8, 2.4, 0.0, h=1.2)
            pigment = cells.take((tissue > 0.0) & (cells.u(6) < 0.01 + 0.02 * normal))
            pigment = pigment.take(self._outside_structures(pigment.x, pigment.y))
            if len(pigment):
                nuclei.add(
                    pigment.x,
                    pigment.y,
                    1.2 + 2.5 * pigment.u(7),
                    1.0 + 1.8 * pigment.u(8),
                    pigment.u(9) * math.pi,
                    d=1.8,
                    h=0.2,
                )
        # spread through air spaces: small tumour clusters floating in alveoli near the tumour
        if scene.case.stas == "present":
            clusters = self._jittered_cells(bounds, 90.0, 15, jitter=0.8)
            if len(clusters):
                fields = self._fields_at(clusters.x, clusters.y)
                normal = fields["nrm"]
                ok = (fields["tis"] > 0.0) & (normal > 0.4) & (normal < 0.99) & (clusters.u(2) < 0.6)
                clusters = clusters.take(ok)
                if len(clusters):
                    clusters = clusters.take(self._septa_points(clusters.x, clusters.y, bounds) > 20.0)
                for j in range(5):  # five cells per cluster
                    angle = 2 * math.pi * clusters.u(10 + j)
                    offset = 7.0 * clusters.u(20 + j)
                    px, py = clusters.x + offset * np.cos(angle), clusters.y + offset * np.sin(angle)
                    nuclei.add(px, py, 6.0, 5.0, angle, e=0.4, h=0.08)
                    nuclei.add(px, py, 3.6, 3.0, angle, h=1.3, e=0.2)

    def _vessels(self, nuclei: Splats, overlay: _Overlay, xs, ys, pixel_size, x0, y0, x1, y1) -> None:
        for vessel_index, vessel in enumerate(self.scene.vessels):
            reach = vessel.radius + vessel.wall + 4
            if vessel.x + reach < x0 or vessel.x - reach > x1 or vessel.y + reach < y0 or vessel.y - reach > y1:
                continue
            key = mix_key(self.key, 400, vessel_index)
            col0, col1 = np.searchsorted(xs, [vessel.x - reach, vessel.x + reach])
            row0, row1 = np.searchsorted(ys, [vessel.y - reach, vessel.y + reach])
            if col1 > col0 and row1 > row0:
                dx = xs[None, col0:col1] - vessel.x
                dy = ys[row0:row1, None] - vessel.y
                dist = np.sqrt(dx * dx + dy * dy * 1.3)
                soft = max(pixel_size, 0.8)
                lumen = np.clip((vessel.radius - dist) / soft + 0.5, 0, 1)
                whole = np.clip((vessel.radius + vessel.wall - dist) / soft + 0.5, 0, 1)
                wall = whole - lumen
                overlay.replace(
                    (slice(row0, row1), slice(col0, col1)),
                    whole,
                    e=wall * 1.0 + lumen * 0.10,
                    h=wall * 0.10,
                    r=lumen * 0.12,
                )
            # red blood cells filling part of the lumen
            n_rbc = int(min(400, (vessel.radius / 4.2) ** 2 * (0.35 if vessel.invaded else 0.8)))
            rbc_index = np.arange(n_rbc)
            rbc_radius = vessel.radius * 0.95 * np.sqrt(hash_u01(rbc_index, 5, key))
            rbc_angle = 2 * math.pi * hash_u01(rbc_index, 6, key)
            nuclei.add(
                vessel.x + rbc_radius * np.cos(rbc_angle),
                vessel.y + rbc_radius * np.sin(rbc_angle) / math.sqrt(1.3),
                3.6,
                3.3,
                rbc_angle,
                r=0.5,
                e=0.12,
            )
            # endothelial nuclei lining the lumen, smooth-muscle nuclei in the wall
            n_wall = max(8, int(2 * math.pi * vessel.radius / 14))
            wall_index = np.arange(n_wall)
            angle = 2 * math.pi * (wall_index + 0.5 * hash_u01(wall_index, 1, key)) / n_wall
            nuclei.add(
                vessel.x + vessel.radius * np.cos(angle),
                vessel.y + (vessel.radius / math.sqrt(1.3)) * np.sin(angle),
                5.0,
                1.3,
                angle + math.pi / 2,
                h=1.3,
                e=0.2,
            )
            mid_wall = vessel.radius + vessel.wall * 0.5
            nuclei.add(
                vessel.x + mid_wall * np.cos(angle + 0.3),
                vessel.y + (mid_wall / math.sqrt(1.3)) * np.sin(angle + 0.3),
                5.5,
                1.5,
                angle + 0.3 + math.pi / 2,
                h=1.1,
                e=0.2,
            )
            if vessel.invaded:  # a tumour embolus: a cluster of class-specific cells in the lumen
                n_cells = 22
                cell_index = np.arange(n_cells)
                cell_radius = 0.62 * vessel.radius * np.sqrt(hash_u01(cell_index, 2, key))
                cell_angle = 2 * math.pi * hash_u01(cell_index, 3, key)
                px = vessel.x + cell_radius * np.cos(cell_angle)
                py = vessel.y + cell_radius * np.sin(cell_angle) / math.sqrt(1.3)
                if self.style.is_lusc:
                    nuclei.add(px, py, 9.0, 8.0, cell_angle, e=0.45, h=0.05)
                    nuclei.add(px, py, 4.4, 3.6, cell_angle, h=1.1, e=0.2, rim=0.45)
                else:
                    nuclei.add(px, py, 6.0, 5.0, cell_angle, e=0.3, h=0.1)
                    nuclei.add(px, py, 3.8, 2.3, cell_angle, h=1.35, e=0.2)

    def _pleura(self, overlay: _Overlay, xs, ys, band, pixel_size) -> None:
        """Pleura over the band's membership ``band`` (0..1): dense pink collagen with wavy elastic fibres."""
        key = mix_key(self.key, 16)
        elastic = 1.0 - smoothstep(0.0, 0.08 * max(1.0, pixel_size), np.abs(value_noise_grid(xs, ys, 40.0, key)))
        overlay.replace(
            (slice(None), slice(None)),
            band,
            e=band * (0.95 + 0.25 * value_noise_grid(xs, ys, 9.0, key + 1)),
            h=band * (0.10 + 0.45 * elastic / max(1.0, pixel_size) ** 0.5),
        )

    def _muscle(self, overlay: _Overlay, xs, ys, band, pixel_size) -> None:
        """Chest-wall skeletal muscle over the band's membership ``band`` (0..1): parallel, wavy fibre bundles."""
        key = mix_key(self.key, 17)
        angle = float(hash_u01(1, 2, key)) * math.pi
        proj = xs[None, :] * math.cos(angle) + ys[:, None] * math.sin(angle)
        warp = 12.0 * value_noise_grid(xs, ys, 90.0, key)
        fibres = 0.5 + 0.5 * np.cos(2 * math.pi * (proj + warp) / 45.0)
        bundles = smoothstep(0.1, 0.3, fibres) if pixel_size < 8 else np.full_like(fibres, 0.75)
        overlay.replace(
            (slice(None), slice(None)), band, e=band * (0.3 + 0.85 * bundles), r=band * 0.18 * bundles, h=band * 0.06
        )

    # ------------------------------------------------------------------ artefacts and colour
    def _pen_od(self, xs, ys) -> np.ndarray | None:
        """Optical density (size, size, 3) of the scene's pen stroke over the tile, or None where it misses."""
        pen = self.scene.pen
        if pen is None or xs[-1] < pen["x0"] or xs[0] > pen["x1"]:
            return None
        curve = pen["y0"] + pen["amp"] * np.sin(2 * math.pi * xs / pen["period"] + pen["phase"])
        if ys[0] > curve.max() + pen["half_width"] + 5 or ys[-1] < curve.min() - pen["half_width"] - 5:
            return None
        dist = np.abs(ys[:, None] - curve[None, :])
        within_x = ((xs >= pen["x0"]) & (xs <= pen["x1"]))[None, :]
        taper = smoothstep(pen["x0"], pen["x0"] + 150.0, xs) * (1.0 - smoothstep(pen["x1"] - 150.0, pen["x1"], xs))
        half_width = (
            pen["half_width"] * (0.5 + 0.5 * taper) * (1.0 + 0.15 * value_noise_grid(xs, ys[:1], 300.0, self.key))
        )
        ink = (
            np.clip((half_width - dist) / 8.0, 0, 1)
            * within_x
            * (0.85 + 0.15 * value_noise_grid(xs, ys, 40.0, self.key + 1))
        )
        if not ink.any():
            return None
        return (ink[..., None] * pen["od"][None, None, :]).astype(np.float32)

    def _fold(self, dens, xs, ys, in_tissue) -> None:
        """A tissue fold: the stain densities of the tissue under the scene's fold line are nearly doubled."""
        fold = self.scene.fold
        dist = np.abs(xs[None, :] * fold["nx"] + ys[:, None] * fold["ny"] - fold["c"])
        folded = np.clip((fold["half_width"] - dist) / 4.0, 0, 1) * in_tissue
        if folded.any():
            dens[:4] *= (1.0 + 0.9 * folded)[None]

    def _compose(self, dens, pen_od, tile_key: int, scale: int) -> np.ndarray:
        """Beer-Lambert colour of the densities (plus the pen's optical density), with sensor noise."""
        size = self.tile_size
        od = (dens[:4].reshape(4, -1).T @ self._stain_od).reshape(size, size, 3)
        if pen_od is not None:
            od += pen_od
        np.negative(od, out=od)
        np.exp(od, out=od)
        rgb = od  # computed in place
        rgb *= self._glass_rgb[None, None, :]
        rgb += (2.2 / scale**0.5) * self._bank_variant(self._noise, tile_key)[..., None] + 0.5
        np.clip(rgb, 0, 255, out=rgb)
        return rgb.astype(np.uint8)


class _Overlay:
    """Structures that replace what lies below them: ``dens = dens * (1 - mask) + added``."""

    def __init__(self, size: int):
        self.mask = np.zeros((size, size), np.float32)
        self.added = np.zeros((4, size, size), np.float32)
        self.used = False

    def replace(self, window, mask, h=0.0, e=0.0, r=0.0) -> None:
        """Cover ``window`` (a pair of slices) with ``mask`` and add the stain densities h, e, r there."""
        self.used = True
        np.maximum(self.mask[window], mask, out=self.mask[window])
        for channel, value in ((H, h), (E, e), (R, r)):
            if not np.isscalar(value) or value:
                self.added[channel][window] += value

    def apply(self, dens: np.ndarray) -> None:
        if self.used:
            dens[:4] *= (1.0 - np.clip(self.mask, 0, 1))[None]
            dens[:4] += self.added

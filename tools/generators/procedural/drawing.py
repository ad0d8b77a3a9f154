"""Rasterising a scene: vectorised numpy coverage of shapes, blobs, patterns and textures,
composed over the background in the colours the scene's streams draw. `Renderer(size)`
draws `Scene`s at a given seed; the same (scene, seed) always gives the same pixels."""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image

from tools.generators.procedural.scene import Scene, _angle, _colours, _size_z, _Streams
from tools.generators.procedural.vocabulary import ACHROMATIC, COLOURS


def _colour_rgb(name: str, rng: np.random.Generator) -> np.ndarray:
    """The colour's RGB in [0, 1], jittered within its range."""
    r, g, b = (c / 255 for c in COLOURS[name])
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    jh, js, jv = rng.uniform(-1, 1, 3)
    if name in ACHROMATIC:
        v = min(max(v + 0.05 * jv, 0.0), 1.0)
        s = 0.0
    else:
        h = (h + 0.02 * jh) % 1.0
        s = min(max(s * (1 + 0.12 * js), 0.0), 1.0)
        v = min(max(v * (1 + 0.1 * jv), 0.0), 1.0)
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)


def _duty(kind: str, scene: Scene, st: _Streams) -> float:
    base = {"stripes": 0.5, "grid": 0.12, "zigzag": 0.45, "waves": 0.45, "spiral": 0.45,
            "concentric rings": 0.5}[kind]
    mult = {"thin": 0.4, "thick": 1.6}.get(scene.thickness or "", None)
    if mult is None:
        mult = st["thickness"].uniform(0.8, 1.2)
    return float(min(base * mult, 0.85))


def _band(t: np.ndarray, duty: float, period: float) -> np.ndarray:
    """Anti-aliased coverage of the band [0, duty) of a periodic coordinate t (in periods)."""
    g = (t - duty / 2 + 0.5) % 1.0 - 0.5
    return np.clip(period * (duty / 2 - np.abs(g)) + 0.5, 0.0, 1.0)


def _polar_polygon(points: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of a polygon star-shaped around the origin as sorted (angles, radii)."""
    ang = np.array([math.atan2(y, x) % (2 * math.pi) for x, y in points])
    rad = np.array([math.hypot(x, y) for x, y in points])
    order = np.argsort(ang)
    ang, rad = ang[order], rad[order]
    return np.append(ang, ang[0] + 2 * math.pi), np.append(rad, rad[0])


def _regular(n: int, start: float, radii: list[float] | None = None):
    radii = radii or [1.0]
    return _polar_polygon([
        (radii[k % len(radii)] * math.cos(start + 2 * math.pi * k / n),
         radii[k % len(radii)] * math.sin(start + 2 * math.pi * k / n))
        for k in range(n)
    ])


_W = 0.32
_POLYGONS = {
    "triangle": _regular(3, -math.pi / 2),
    "square": _regular(4, math.pi / 4),
    "diamond": _polar_polygon([(0.72, 0), (0, 1), (-0.72, 0), (0, -1)]),
    "rectangle": _polar_polygon([(1, 0.55), (-1, 0.55), (-1, -0.55), (1, -0.55)]),
    "pentagon": _regular(5, -math.pi / 2),
    "hexagon": _regular(6, 0.0),
    "octagon": _regular(8, math.pi / 8),
    "star": _regular(10, -math.pi / 2, [1.0, 0.42]),
    "cross": _polar_polygon([(1, -_W), (1, _W), (_W, _W), (_W, 1), (-_W, 1), (-_W, _W),
                             (-1, _W), (-1, -_W), (-_W, -_W), (-_W, -1), (_W, -1),
                             (_W, -_W)]),
}


def _shape_coverage(shape: str, dx: np.ndarray, dy: np.ndarray, r: float, rot: float):
    """Anti-aliased coverage of `shape` of radius r (pixels), rotated, centred at 0."""
    c, s = math.cos(rot), math.sin(rot)
    x, y = dx * c + dy * s, -dx * s + dy * c  # shape frame
    rho = np.hypot(x, y)
    if shape == "circle":
        return np.clip(r - rho + 0.5, 0, 1)
    if shape == "ellipse":
        q = np.hypot(x, y / 0.6)
        return np.clip((r - q) * 0.8 + 0.5, 0, 1)
    if shape == "ring":
        return np.clip(np.minimum(r - rho, rho - 0.62 * r) + 0.5, 0, 1)
    if shape == "crescent":
        other = np.hypot(x - 0.38 * r, y)
        return np.clip(np.minimum(r - rho, other - 0.82 * r) + 0.5, 0, 1)
    if shape == "heart":
        scale = 0.82 * r  # the curve spans x in [-1.14, 1.14], y in [-1, 1.25]
        u, v = x / scale, -y / scale + 0.12
        a = u * u + v * v - 1
        f = a ** 3 - u * u * v ** 3
        grad = np.hypot(6 * u * a * a - 2 * u * v ** 3, 6 * v * a * a - 3 * u * u * v * v)
        return np.clip(0.5 - f / (grad + 1e-3) * scale, 0, 1)
    ang, rad = _POLYGONS[shape]
    phi = np.arctan2(y, x) % (2 * math.pi)
    phi = np.where(phi < ang[0], phi + 2 * math.pi, phi)  # the wrap-around edge
    k = np.clip(np.searchsorted(ang, phi, side="right") - 1, 0, len(ang) - 2)
    a1, a2, r1, r2 = ang[k], ang[k + 1], rad[k] * r, rad[k + 1] * r
    edge = r1 * r2 * np.sin(a2 - a1) / (r1 * np.sin(phi - a1) + r2 * np.sin(a2 - phi))
    return np.clip(edge - rho + 0.5, 0, 1)


class Renderer:
    """Draws scenes on a square canvas of `size` pixels."""

    def __init__(self, size: int):
        self.size = int(size)
        ax = np.arange(self.size, dtype=np.float32) + 0.5
        self._x, self._y = np.meshgrid(ax, ax)  # pixel centres; y grows downwards

    def draw(self, scene: Scene, seed: int) -> Image.Image:
        """The image of `scene` at `seed`."""
        S = self.size
        st = _Streams(seed)
        if scene.kind is None:  # nothing drawable: a mid-gray canvas
            arr = np.full((S, S, 3), 0.5, np.float32)
            return Image.fromarray((arr * 255 + 0.5).astype(np.uint8), "RGB")
        ink, bg = _colours(scene, st)
        inks = np.stack([_colour_rgb(c, st[f"ink-jitter-{i}"]) for i, c in enumerate(ink)])
        back = _colour_rgb(bg, st["bg-jitter"])
        cat = scene.category
        if cat == "shape" or cat == "blobs":
            canvas = np.empty((S, S, 3), np.float32)
            canvas[:] = back
            if cat == "shape":
                self._shapes(canvas, scene, inks, st)
            else:
                self._blobs(canvas, scene, inks, st)
        elif cat == "pattern":
            cov, idx = self._pattern(scene, st)
            canvas = self._compose(cov, idx, inks, back)
        else:
            canvas = self._texture(scene, inks, back, st)
        return Image.fromarray((np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")

    @staticmethod
    def _compose(cov, idx, inks, back):
        ink_img = inks[0] if len(inks) == 1 else inks[idx % len(inks)]
        cov = cov[..., None]
        return back * (1 - cov) + ink_img * cov

    def _placements(self, scene: Scene, st: _Streams) -> list[tuple[float, float, float, float]]:
        """(centre x, centre y, radius, rotation) of each shape or blob, in pixels.

        Shapes and blobs share these streams, so a shape and the blob that replaces it in
        an ablation sit in the same place with the same size.
        """
        S = self.size
        n = scene.count or int(st["count"].integers(2, 6))
        g = 1 if n == 1 else (2 if n <= 4 else 3)
        z = _size_z(scene, st)
        base = S * (0.04 + 0.30 * z) / math.sqrt(g)
        cell = S / g
        cells = st["layout"].permutation(g * g)[:n]
        jitter = st["position"].random((9, 2))
        rots = st["rotation"].uniform(0, 2 * math.pi, 9)
        scales = st["size-jitter-each"].uniform(0.9, 1.1, 9)
        out = []
        for i in range(n):
            r = min(base * scales[i], 0.46 * cell)
            if g == 1:
                cx, cy = (S / 2 + (jitter[i] * 2 - 1) * max(S / 2 - r - 2, 0) * 0.6)
            else:
                row, col = divmod(int(cells[i]), g)
                room = max(cell - 2 * r - 2, 0)
                cx = col * cell + 1 + r + jitter[i, 0] * room
                cy = row * cell + 1 + r + jitter[i, 1] * room
            out.append((float(cx), float(cy), float(r), float(rots[i])))
        return out

    def _crop(self, cx: float, cy: float, half: float):
        S = self.size
        x0, x1 = max(int(cx - half - 2), 0), min(int(cx + half + 3), S)
        y0, y1 = max(int(cy - half - 2), 0), min(int(cy + half + 3), S)
        return (slice(y0, y1), slice(x0, x1))

    def _shapes(self, canvas, scene: Scene, inks, st: _Streams) -> None:
        for i, (cx, cy, r, rot) in enumerate(self._placements(scene, st)):
            if scene.kind == "heart":
                rot = (rot / math.pi - 1) * 0.35  # hearts stay roughly upright
            box = self._crop(cx, cy, r)
            dx, dy = self._x[box] - cx, self._y[box] - cy
            cov = _shape_coverage(scene.kind, dx, dy, r, rot)[..., None]
            canvas[box] *= 1 - cov
            canvas[box] += cov * inks[i % len(inks)]

    def _blobs(self, canvas, scene: Scene, inks, st: _Streams) -> None:
        """Metaballs: four Gaussians per blob, thresholded at half height."""
        rng = st["blob-shape"]
        offsets = rng.normal(0, 0.35, (9, 4, 2))
        widths = rng.uniform(0.26, 0.46, (9, 4))
        for i, (cx, cy, r, _) in enumerate(self._placements(scene, st)):
            box = self._crop(cx, cy, 1.5 * r)
            ax_x = self._x[0, box[1]]
            ax_y = self._y[box[0], 0]
            field = np.zeros((len(ax_y), len(ax_x)), np.float32)
            for k in range(4):
                ox, oy = offsets[i, k] * r
                s2 = 2 * (widths[i, k] * r) ** 2
                field += np.outer(np.exp(-((ax_y - cy - oy) ** 2) / s2),
                                  np.exp(-((ax_x - cx - ox) ** 2) / s2))
            cov = np.clip((field - 0.5) * 12 + 0.5, 0, 1)[..., None]
            canvas[box] *= 1 - cov
            canvas[box] += cov * inks[i % len(inks)]

    def _pattern(self, scene: Scene, st: _Streams):
        S = self.size
        kind = scene.kind
        z = _size_z(scene, st)
        period = S * (0.05 + 0.22 * z) * st["frequency"].uniform(0.85, 1.15)
        theta = _angle(scene, st)
        phase = st["phase"].random(2)
        c, s = math.cos(theta), math.sin(theta)
        x = self._x - S / 2
        y = self._y - S / 2
        u = (x * c + y * s) / period + phase[0]
        if kind in ("stripes", "zigzag", "waves"):
            if kind != "stripes":
                v = (-x * s + y * c) / period
                shape = st["wave"].uniform(0, 1, 2)
                wavelength = 1.2 + 1.3 * shape[0]
                amp = 0.35 + 0.5 * shape[1]
                t = v / wavelength + phase[1]
                if kind == "zigzag":
                    u = u + amp * 2 * np.abs(t - np.floor(t + 0.5))
                else:
                    u = u + amp * np.sin(2 * math.pi * t)
            duty = _duty(kind, scene, st)
            return _band(u, duty, period), np.floor(u).astype(np.int64)
        if kind in ("polka dots", "checkerboard", "grid"):
            v = (-x * s + y * c) / period + phase[1]
            if kind == "polka dots":
                row = np.floor(v)
                a = u + 0.5 * (row % 2)
                col = np.round(a)
                dist = np.hypot(a - col, v - row - 0.5) * period
                radius = period * st["thickness"].uniform(0.24, 0.32)
                return np.clip(radius - dist + 0.5, 0, 1), (col + row).astype(np.int64)
            if kind == "checkerboard":
                i, j = np.floor(u), np.floor(v)
                parity = ((i + j) % 2) == 0
                d = np.minimum(0.5 - np.abs(u - i - 0.5), 0.5 - np.abs(v - j - 0.5)) * period
                d = np.minimum(d, 0.5)
                cov = np.where(parity, 0.5 + d, 0.5 - d)
                return cov, np.floor((i - j) / 2).astype(np.int64)
            duty = _duty(kind, scene, st)
            du = np.abs(u - np.round(u))
            dv = np.abs(v - np.round(v))
            d = np.minimum(du, dv) * period
            return np.clip(duty * period / 2 - d + 0.5, 0, 1), np.zeros((S, S), np.int64)
        # spiral, concentric rings: around a jittered centre
        centre = (st["position"].random(2) - 0.5) * S * 0.4
        rho = np.hypot(x - centre[0], y - centre[1]) / period
        duty = _duty(kind, scene, st)
        if kind == "spiral":
            arms = 1 + int(st["wave"].integers(0, 2))
            phi = np.arctan2(y - centre[1], x - centre[0]) / (2 * math.pi)
            t = rho - arms * phi * (1 if phase[1] < 0.5 else -1) + phase[0]
            return _band(t, duty, period), np.floor(t).astype(np.int64)
        t = rho + phase[0]
        return _band(t, duty, period), np.floor(t).astype(np.int64)

    def _texture(self, scene: Scene, inks, back, st: _Streams) -> np.ndarray:
        S = self.size
        kind = scene.kind
        if kind == "plain":
            canvas = np.empty((S, S, 3), np.float32)
            canvas[:] = inks[0]
            return canvas
        stops = np.concatenate([inks, back[None]], axis=0)
        if kind == "speckle":
            z = _size_z(scene, st)
            cell = max(1, int(round(1 + 4 * z)))
            n = -(-S // cell)
            rng = st["layout"]
            density = rng.uniform(0.05, 0.15)
            mask = rng.random((n, n)) < density
            idx = rng.integers(0, len(inks), (n, n))
            mask = np.repeat(np.repeat(mask, cell, 0), cell, 1)[:S, :S]
            idx = np.repeat(np.repeat(idx, cell, 0), cell, 1)[:S, :S]
            return self._compose(mask.astype(np.float32), idx, inks, back)
        if kind == "gradient":
            theta = float(st["angle"].uniform(0, 2 * math.pi))
            x = self._x - S / 2
            y = self._y - S / 2
            t = (x * math.cos(theta) + y * math.sin(theta)) / (S * 0.72) + 0.5
        else:  # noise: bicubic value noise
            z = _size_z(scene, st)
            k = max(3, int(round(S / (3 + 20 * z))))
            field = np.zeros((S, S), np.float32)
            for octave, weight in ((k, 1.0), (min(2 * k, S // 2), 0.5)):
                small = st["layout"].random((octave, octave)).astype(np.float32)
                field += weight * np.asarray(Image.fromarray(small).resize((S, S),
                                                                          Image.BICUBIC))
            lo, hi = np.percentile(field, [2, 98])
            t = (field - lo) / max(hi - lo, 1e-6)
        t = np.clip(t, 0, 1) * (len(stops) - 1)
        i0 = np.minimum(np.floor(t).astype(np.int64), len(stops) - 2)
        w = (t - i0)[..., None]
        return stops[i0] * (1 - w) + stops[i0 + 1] * w

"""Planted neurons: a target model whose units are known detectors, for ground-truth evals.

Each unit is a detector computed from pixels only (never from a renderer's metadata),
written as an expression in a suite TOML file, so a new unit needs no code:

    [[unit]]
    name = "red-dots"
    detector = "and(colour('red'), dots(scale=12))"
    label = "small red polka dots"
    accept = ["red dots", "red spots"]
    # OR units only: the true concepts, each a label or {label = ..., accept = [...]}
    concepts = ["plain red", {label = "vertical stripes", accept = ["vertical lines"]}]

Primitives (raw scores from RGB in [0, 1]; lengths in input pixels):

- ``colour(name, hue=(lo, hi), sat=(lo, hi), val=(lo, hi))``: soft share of pixels in an
  HSV box (hue in degrees, may wrap: (-12, 12)); a name gives the box, keywords override.
- ``stripes(orientation, period)``: Gabor energy -- the share of the (Hann-windowed)
  spectrum's contrast energy within ~8 degrees of one orientation and, with ``period``,
  within a 1.5x band of that spatial frequency. No orientation: the best of 12.
- ``dots(scale)``: blobs of one polarity, diameter ``scale`` (0: the best of BLOB_SCALES),
  from the scale-normalised determinant of the Hessian (DoH; zero on straight stripes).
- ``checkerboard(scale)``: bright and dark blobs with saddles (X-junctions) between them.
- ``edges()``: mean gradient magnitude; ``corners()``: Harris corner response.

Each raw score becomes a presence in (0, 1) by a logistic calibrated per primitive
(`CALIBRATION`). Combinators: ``and(a, b, ...)`` = min, ``or(a, b, ...)`` = max (a
polysemantic unit), ``not(a)`` = 1 - a. Expressions are parsed with `ast` against this
whitelist (``and``/``or``/``not`` are read as calls), never evaluated.

The model (`load_planted`, scheme ``planted:<suite file or name>``, offered to tools.models
through the ``line_agent.models`` entry point in pyproject.toml) has one layer, ``units``,
whose output is N x U (one presence per unit, already reduced over space), and takes
images un-normalised (mean 0, std 1), 224 px; features are computed at WORK_SIZE px.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import math
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import tomllib
import torch
from torch import nn

from tools.errors import LineError
from tools.models import TargetModel

SUITES = Path(__file__).parent / "suites"
INPUT_SIZE = 224
WORK_SIZE = 112
HESSIAN_PAD = 16  # working pixels of mirrored border, > 3 sigma of the largest blob scale
_EPS = 1e-6

# --- features shared by the detectors of one forward ---------------------------------------
# HSV boxes of named colours (hue degrees, saturation, value), fitted to common renderings.
COLOURS: dict[str, dict[str, tuple[float, float]]] = {
    "red": {"hue": (-12, 12), "sat": (0.55, 1), "val": (0.55, 1)},
    "orange": {"hue": (18, 40), "sat": (0.6, 1), "val": (0.72, 1)},
    "yellow": {"hue": (42, 64), "sat": (0.5, 1), "val": (0.7, 1)},
    "green": {"hue": (90, 155), "sat": (0.4, 1), "val": (0.3, 1)},
    "teal": {"hue": (168, 195), "sat": (0.6, 1), "val": (0.3, 0.65)},
    "cyan": {"hue": (175, 198), "sat": (0.5, 1), "val": (0.72, 1)},
    "blue": {"hue": (212, 242), "sat": (0.6, 1), "val": (0.6, 1)},
    "navy": {"hue": (215, 250), "sat": (0.5, 1), "val": (0.15, 0.5)},
    "purple": {"hue": (265, 292), "sat": (0.5, 1), "val": (0.4, 1)},
    "magenta": {"hue": (293, 320), "sat": (0.6, 1), "val": (0.55, 1)},
    "pink": {"hue": (322, 352), "sat": (0.2, 0.6), "val": (0.8, 1)},
    "brown": {"hue": (12, 40), "sat": (0.45, 1), "val": (0.25, 0.6)},
    "black": {"hue": (0, 360), "sat": (0, 1), "val": (0, 0.15)},
    "white": {"hue": (0, 360), "sat": (0, 0.12), "val": (0.85, 1)},
    "gray": {"hue": (0, 360), "sat": (0, 0.12), "val": (0.35, 0.7)},
}
ORIENTATIONS = {"vertical": 0.0, "diagonal": 45.0, "horizontal": 90.0, "antidiagonal": 135.0}


class Features:
    """Lazily computed views of a batch (N x 3 x S x S, RGB in [0, 1]), memoised. They are
    computed at WORK_SIZE px (area-downsampled); lengths and frequencies are stated in input
    pixels (`pixel` input pixels per working pixel)."""

    def __init__(self, x: torch.Tensor):
        self.pixel = max(1, x.shape[-1] // WORK_SIZE)
        self.x = nn.functional.avg_pool2d(x.float().clamp(0, 1), self.pixel)
        self._memo: dict[tuple, torch.Tensor] = {}

    def memo(self, key: tuple, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    @cached_property
    def hsv(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hue in degrees [0, 360), saturation and value in [0, 1]; each N x S x S."""
        r, g, b = self.x.unbind(1)
        top, _ = self.x.max(1)
        low, _ = self.x.min(1)
        span = top - low
        safe = span.clamp_min(_EPS)
        hue = torch.where(top == r, ((g - b) / safe) % 6,
                          torch.where(top == g, (b - r) / safe + 2, (r - g) / safe + 4)) * 60
        hue = torch.where(span > _EPS, hue, torch.zeros_like(hue))
        return hue, span / top.clamp_min(_EPS), top

    @cached_property
    def gray(self) -> torch.Tensor:
        return torch.einsum("nchw,c->nhw", self.x, self.x.new_tensor([0.299, 0.587, 0.114]))

    @cached_property
    def contrast(self) -> torch.Tensor:
        """Standard deviation of the gray image, N."""
        return self.gray.flatten(1).std(1)

    @cached_property
    def spectrum(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Power of the Hann-windowed, zero-mean gray image, with each frequency's radius
        (cycles per pixel) and orientation (degrees in [0, 180): 0 = vertical stripes)."""
        size = self.gray.shape[-1]
        window = torch.hann_window(size, periodic=False)
        centred = self.gray - self.gray.mean((1, 2), keepdim=True)
        power = torch.fft.rfft2(centred * window[:, None] * window[None, :]).abs() ** 2
        fy, fx = _frequency_grid(size)
        radius = torch.hypot(fx, fy) / self.pixel
        angle = torch.rad2deg(torch.atan2(fy, fx)) % 180
        return power, radius, angle

    @cached_property
    def gradient(self) -> tuple[torch.Tensor, torch.Tensor]:
        """d/dy, d/dx of the gray image per input pixel."""
        gy, gx = torch.gradient(self.gray, dim=(1, 2))
        return gy / self.pixel, gx / self.pixel

    def hessian(self, sigma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scale-normalised (sigma^2) Gaussian second derivatives Lxx, Lyy, Lxy of the
        contrast-normalised gray image at scale `sigma` (input pixels), computed in the
        frequency domain on a mirrored pad."""
        spectrum, wy, wx = self.padded_spectrum
        s = sigma / self.pixel
        blurred = spectrum * torch.exp(-0.5 * s**2 * (wx**2 + wy**2))
        size = (wy.shape[0], 2 * (wx.shape[1] - 1))
        crop = (slice(None), slice(HESSIAN_PAD, -HESSIAN_PAD), slice(HESSIAN_PAD, -HESSIAN_PAD))

        def derivative(kernel: torch.Tensor) -> torch.Tensor:
            return s**2 * torch.fft.irfft2(blurred * kernel, s=size)[crop]

        return derivative(-wx**2), derivative(-wy**2), derivative(-wx * wy)

    @cached_property
    def padded_spectrum(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Spectrum of the contrast-normalised gray image with a mirrored border, and the
        angular frequencies of its rows and columns."""
        centred = self.gray - self.gray.mean((1, 2), keepdim=True)
        image = centred / (self.contrast[:, None, None] + 0.02)
        pad = HESSIAN_PAD
        padded = nn.functional.pad(image[:, None], (pad, pad, pad, pad), mode="reflect")[:, 0]
        wy = 2 * math.pi * torch.fft.fftfreq(padded.shape[-2])[:, None]
        wx = 2 * math.pi * torch.fft.rfftfreq(padded.shape[-1])[None, :]
        return torch.fft.rfft2(padded), wy, wx


def _frequency_grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    fy = torch.fft.fftfreq(size)[:, None].expand(size, size // 2 + 1)
    fx = torch.fft.rfftfreq(size)[None, :].expand(size, size // 2 + 1)
    return fy, fx


# --- primitives ------------------------------------------------------------------------------
def _soft_between(value: torch.Tensor, low: float, high: float, softness: float) -> torch.Tensor:
    return torch.sigmoid((value - low) / softness) * torch.sigmoid((high - value) / softness)




def colour(f: Features, name: str = "", hue: tuple = (), sat: tuple = (), val: tuple = ()) -> torch.Tensor:
    """Share of pixels in an HSV box."""
    if name and name not in COLOURS:
        raise LineError(f"unknown colour {name!r} in a detector.", f"Use one of: {', '.join(COLOURS)}.")
    box = dict(COLOURS.get(name, {"hue": (0, 360), "sat": (0, 1), "val": (0, 1)}))
    box.update({k: v for k, v in (("hue", hue), ("sat", sat), ("val", val)) if v})
    h, s, v = f.hsv
    (h_lo, h_hi), centre = box["hue"], (box["hue"][0] + box["hue"][1]) / 2
    offset = (h - centre + 180) % 360 - 180  # hue distance to the box centre, wrapped
    half = (h_hi - h_lo) / 2
    in_hue = torch.ones_like(h) if half >= 180 else _soft_between(offset, -half, half, 2.0)
    inside = in_hue * _soft_between(s, *box["sat"], 0.03) * _soft_between(v, *box["val"], 0.03)
    return inside.flatten(1).mean(1)


def stripes(f: Features, orientation: str = "", period: float = 0.0) -> torch.Tensor:
    """Share of contrast energy in one orientation (and frequency band)."""
    if orientation and orientation not in ORIENTATIONS:
        raise LineError(f"unknown orientation {orientation!r} in a detector.", f"Use one of: {', '.join(ORIENTATIONS)}.")
    power, radius, angle = f.spectrum
    if period:
        band = _soft_between(torch.log(radius.clamp_min(_EPS)), math.log(1 / (1.5 * period)),
                             math.log(1.5 / period), 0.1)
    else:
        band = _soft_between(radius, 1 / 110, 1 / 5, 0.002)
    total = (power * band).flatten(1).sum(1) + 1e-3 * power[0].numel()
    angles = [ORIENTATIONS[orientation]] if orientation else [15.0 * k for k in range(12)]
    if orientation == "diagonal":
        angles = [ORIENTATIONS["diagonal"], ORIENTATIONS["antidiagonal"]]
    shares = []
    for theta in angles:
        distance = (angle - theta + 90) % 180 - 90
        weight = torch.exp(-0.5 * (distance / 8.0) ** 2) * band
        shares.append((power * weight).flatten(1).sum(1) / total)
    return torch.stack(shares).max(0).values


BLOB_SCALES = (8.0, 12.0, 18.0, 27.0)


def _blob_energies(f: Features, scale: float) -> torch.Tensor:
    """(bright blobs, dark blobs, saddles) energy at one scale (diameter in pixels), 3 x N:
    means of sqrt|DoH| where the determinant of the Hessian is positive (split by the sign of
    the Laplacian) or negative."""
    def compute() -> torch.Tensor:
        lxx, lyy, lxy = f.hessian(scale / (2 * math.sqrt(2)))
        det = lxx * lyy - lxy**2
        strength = det.abs().sqrt()
        zero = torch.zeros_like(strength)
        blob = torch.where(det > 0, strength, zero)
        bright = (lxx + lyy) < 0
        parts = [torch.where(bright, blob, zero), torch.where(bright, zero, blob), strength - blob]
        return torch.stack([p.flatten(1).mean(1) for p in parts])

    return f.memo(("blobs", scale), compute)


def dots(f: Features, scale: float = 0.0) -> torch.Tensor:
    """Blobs of one polarity at one scale (diameter in pixels; 0 = the best of BLOB_SCALES):
    bright-blob minus dark-blob energy or the reverse, so that checkerboards (both) and
    stripes (neither) stay low."""
    def one(s: float) -> torch.Tensor:
        bright, dark, _ = _blob_energies(f, s)
        return (bright - dark).abs()

    return torch.stack([one(s) for s in ([scale] if scale else BLOB_SCALES)]).max(0).values


def checkerboard(f: Features, scale: float = 0.0) -> torch.Tensor:
    """Cells of both polarities with X-junctions between them, cells `scale` pixels wide
    (0 = the best of BLOB_SCALES): min(bright, dark, saddle energy)."""
    def one(s: float) -> torch.Tensor:
        return _blob_energies(f, s).min(0).values

    return torch.stack([one(s) for s in ([scale] if scale else BLOB_SCALES)]).max(0).values


def edges(f: Features) -> torch.Tensor:
    """Mean gradient magnitude of the gray image."""
    gy, gx = f.gradient
    return torch.hypot(gx, gy).flatten(1).mean(1)


def corners(f: Features) -> torch.Tensor:
    """Harris corner response (structure tensor over 5 working pixels, k = 0.05)."""
    gy, gx = f.gradient
    blur = nn.functional.avg_pool2d
    xx, yy, xy = (blur(t[:, None], 5, 1, 2)[:, 0] for t in (gx * gx, gy * gy, gx * gy))
    response = xx * yy - xy**2 - 0.05 * (xx + yy) ** 2
    return response.clamp_min(0).sqrt().flatten(1).mean(1)


def random_filter(f: Features, seed: int = 0) -> torch.Tensor:
    """A fixed random 9x9 colour filter (zero-mean, unit norm; from `seed`), rectified, then
    the spatial mean of its two-pixel-shifted product with a second one: a detector no
    procedural scene is made to express (the trust evals' unexpressible unit)."""
    generator = torch.Generator().manual_seed(int(seed))
    kernels = torch.randn(2, 3, 9, 9, generator=generator)
    kernels = kernels - kernels.mean(dim=(1, 2, 3), keepdim=True)
    kernels = kernels / kernels.flatten(1).norm(dim=1)[:, None, None, None]
    response = nn.functional.conv2d(f.x - f.x.mean(dim=(2, 3), keepdim=True), kernels.to(f.x), padding=4).clamp_min(0)
    return (response[:, 0] * torch.roll(response[:, 1], shifts=(2, 2), dims=(1, 2))).flatten(1).mean(1)


def random_projection(f: Features, seed: int = 0) -> torch.Tensor:
    """A fixed random direction (from `seed`) in the space of 8x8 colour thumbnails with
    their mean removed: a hash of the layout, which no concept names."""
    thumb = nn.functional.adaptive_avg_pool2d(f.x, 8)
    thumb = (thumb - thumb.mean(dim=(1, 2, 3), keepdim=True)).flatten(1)
    direction = torch.randn(thumb.shape[1], generator=torch.Generator().manual_seed(int(seed)))
    return thumb @ (direction / direction.norm()).to(thumb)


def noise_template(f: Features, seed: int = 0) -> torch.Tensor:
    """The cosine between the image's fine detail (gray minus its 3x3 mean, at WORK_SIZE px)
    and a fixed white-noise template (from `seed`): where each edge falls, pixel by pixel, is
    all it sees, and every seed of a concept moves the edges, so no concept drives it. The
    trust evals' unit the generator cannot express (random_filter and random_projection turned
    out to be expressible: stripes and plain colours drive them beyond every photo)."""
    gray = f.gray[:, None]
    detail = (gray - nn.functional.avg_pool2d(gray, 3, 1, 1, count_include_pad=False))[:, 0]
    detail = detail - detail.mean(dim=(1, 2), keepdim=True)
    template = torch.randn(detail.shape[-2:], generator=torch.Generator().manual_seed(int(seed))).to(detail)
    return (detail * template).flatten(1).sum(1) / (detail.flatten(1).norm(dim=1) * template.norm() + _EPS)


PRIMITIVES: dict[str, Callable[..., torch.Tensor]] = {
    fn.__name__: fn for fn in (colour, stripes, dots, checkerboard, edges, corners, random_filter, random_projection,
                               noise_template)
}
# Raw score -> presence = sigmoid((raw - midpoint) / width), set from the raw scores of
# generator images of each concept and of a procedural control set, so that a clear
# instance gives > 0.9 and a typical other image < 0.2: the combinators need one scale.
CALIBRATION: dict[str, tuple[float, float]] = {
    "colour": (0.12, 0.04), "stripes": (0.45, 0.06), "dots": (0.04, 0.006),
    "checkerboard": (0.035, 0.006), "edges": (0.035, 0.008), "corners": (0.0005, 0.00015),
    "random_filter": (0.0044, 0.001), "random_projection": (0.3, 0.1),
    "noise_template": (0.02, 0.008),
}
COMBINATORS = {"and", "or", "not"}


# --- detector expressions --------------------------------------------------------------------
@dataclass(frozen=True)
class Detector:
    """A parsed expression: a primitive with bound arguments, or a combinator of detectors."""

    op: str
    args: tuple = ()  # combinators: child Detectors; primitives: (name, value) pairs

    def __call__(self, f: Features) -> torch.Tensor:
        if self.op == "and":
            return torch.stack([child(f) for child in self.args]).min(0).values
        if self.op == "or":
            return torch.stack([child(f) for child in self.args]).max(0).values
        if self.op == "not":
            return 1 - self.args[0](f)
        return f.memo((self.op, self.args), lambda: self._presence(PRIMITIVES[self.op](f, **dict(self.args))))

    def _presence(self, raw: torch.Tensor) -> torch.Tensor:
        midpoint, width = CALIBRATION[self.op]
        return torch.sigmoid((raw.double() - midpoint) / width)

    @property
    def kind(self) -> str:
        """'polysemantic' (an OR on top), 'compositional' (AND/NOT) or 'mono'."""
        if self.op == "or":
            return "polysemantic"
        return "compositional" if self.op in COMBINATORS else "mono"


def parse_detector(text: str) -> Detector:
    """A detector from its expression; only whitelisted calls and literal arguments."""
    try:  # and/or/not are Python keywords: parse them as and_/or_/not_
        tree = ast.parse(_KEYWORD_CALL.sub(r"\1_(", text.strip()), mode="eval").body
    except SyntaxError as error:
        raise LineError(f"detector {text!r} is not an expression ({error.msg}).", _GRAMMAR) from error
    return _build(tree, text)


_KEYWORD_CALL = re.compile(r"\b(and|or|not)\s*\(")
_GRAMMAR = ("Write calls like and(colour('red'), dots(scale=12)); primitives: "
            + ", ".join(PRIMITIVES) + "; combinators: and, or, not.")


def _build(node: ast.AST, text: str) -> Detector:
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise LineError(f"detector {text!r}: {ast.unparse(node)!r} is not a detector call.", _GRAMMAR)
    op = node.func.id.removesuffix("_")
    if op in COMBINATORS:
        if node.keywords or not node.args or (op == "not" and len(node.args) != 1):
            raise LineError(f"detector {text!r}: {op}() takes {'one detector' if op == 'not' else 'detectors'} only.", _GRAMMAR)
        return Detector(op, tuple(_build(arg, text) for arg in node.args))
    if op not in PRIMITIVES:
        raise LineError(f"detector {text!r}: unknown function {op!r}.", _GRAMMAR)
    args = [_literal(arg, text) for arg in node.args]
    kwargs = {kw.arg: _literal(kw.value, text) for kw in node.keywords if kw.arg}
    try:
        bound = inspect.signature(PRIMITIVES[op]).bind(None, *args, **kwargs)
    except TypeError as error:
        raise LineError(f"detector {text!r}: bad arguments to {op}() ({error}).", _GRAMMAR) from error
    bound.arguments.pop(next(iter(bound.arguments)))  # the features slot
    return Detector(op, tuple(sorted(bound.arguments.items())))


def _literal(node: ast.AST, text: str):
    """A string, a number or a tuple of numbers, nothing else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and isinstance(node.operand.value, (int, float)):
        return -node.operand.value
    if isinstance(node, (ast.Tuple, ast.List)):
        values = tuple(_literal(item, text) for item in node.elts)
        if all(isinstance(v, (int, float)) for v in values):
            return values
    raise LineError(f"detector {text!r}: argument {ast.unparse(node)!r} is not a literal.",
                    "Arguments are strings, numbers or tuples of numbers.")


# --- suites ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Concept:
    label: str
    accept: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.label, *self.accept)


@dataclass(frozen=True)
class PlantedUnit:
    name: str
    detector: Detector
    truth: Concept
    concepts: tuple[Concept, ...] = ()  # the separate true concepts of a polysemantic unit

    @property
    def kind(self) -> str:
        return self.detector.kind


@dataclass(frozen=True)
class Suite:
    path: Path
    digest: str
    units: tuple[PlantedUnit, ...]


def suite_path(ref: str) -> Path:
    """A suite file: a path, or the name of a suite shipped in evals/suites/."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    shipped = SUITES / f"{ref}.toml"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in SUITES.glob("*.toml")))
    raise LineError(f"no planted suite {ref!r}.", f"Give a suite file, or one of: {names}.")


def load_suite(ref: str | Path) -> Suite:
    path = suite_path(str(ref))
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode())
    except tomllib.TOMLDecodeError as error:
        raise LineError(f"suite {path} is not valid TOML: {error}.", "Fix the syntax.") from error
    entries = data.get("unit", [])
    if not entries:
        raise LineError(f"suite {path} defines no [[unit]].", "Add [[unit]] tables with name, detector and label.")
    units = tuple(_unit(entry, path) for entry in entries)
    names = [u.name for u in units]
    if len(set(names)) != len(names):
        raise LineError(f"suite {path} repeats a unit name.", "Give every unit its own name.")
    code = Path(__file__).read_bytes()  # the detectors' code is part of what a unit computes
    return Suite(path, hashlib.sha256(raw + code).hexdigest()[:12], units)


def _unit(entry: dict, path: Path) -> PlantedUnit:
    unknown = set(entry) - {"name", "detector", "label", "accept", "concepts"}
    missing = {"name", "detector", "label"} - set(entry)
    if unknown or missing:
        raise LineError(f"suite {path}: unit {entry.get('name', '?')!r} has "
                        f"{'unknown keys ' + str(sorted(unknown)) if unknown else 'no ' + str(sorted(missing))}.",
                        "A unit has name, detector, label, and optionally accept and concepts.")
    concepts = tuple(_concept(c) for c in entry.get("concepts", []))
    return PlantedUnit(entry["name"], parse_detector(entry["detector"]),
                       Concept(entry["label"], tuple(entry.get("accept", []))), concepts)


def _concept(item: str | dict) -> Concept:
    if isinstance(item, str):
        return Concept(item)
    return Concept(item["label"], tuple(item.get("accept", [])))


# --- the target model ---------------------------------------------------------------------------
class UnitLayer(nn.Module):
    """N x 3 x S x S images in [0, 1] -> N x U presences."""

    def __init__(self, detectors: list[Detector]):
        super().__init__()
        self.detectors = detectors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = Features(x)
        return torch.stack([detector(features) for detector in self.detectors], dim=1).float()


class PlantedNet(nn.Module):
    def __init__(self, suite: Suite):
        super().__init__()
        self.suite = suite
        self.units = UnitLayer([u.detector for u in suite.units])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.units(x)


def load_planted(ref: str, device: str = "cpu") -> TargetModel:
    """The planted model of a suite; `ref` is `<suite>` or `<suite>@<digest>` (the digest pins
    the suite's and the detectors' code, so cached activations never outlive an edit)."""
    path_ref, _, pinned = ref.rpartition("@") if "@" in ref else (ref, "", "")
    suite = load_suite(path_ref)
    if pinned and pinned != suite.digest:
        raise LineError(f"suite {suite.path} changed (digest {suite.digest}, pinned {pinned}).",
                        f"Use planted:{path_ref}@{suite.digest}, or drop the @digest.")
    return TargetModel(name=f"planted:{ref}", module=PlantedNet(suite), input_size=INPUT_SIZE,
                       mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def pinned_spec(ref: str | Path) -> str:
    """`planted:<suite>@<digest>`: the model name evals use, so caches follow the content."""
    suite = load_suite(ref)
    return f"planted:{ref}@{suite.digest}"


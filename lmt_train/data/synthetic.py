"""Procedural cartoon portraits with exact ground truth for local translation.

Each scene is a head-and-shoulders portrait: textured background, clothing,
a shaded face with eyes / brows / nose / mouth (smiling or not), and hair
whose colour is the translated attribute.  Everything random about a scene
lives in :class:`SceneParams`; :func:`render` turns it into pixels at any
resolution (geometry is in normalised coordinates, so ``render(s, 32)`` and
``render(s, 256)`` show the same scene).

Why this exists: LOMIT-style models must change *only* the hair, taking the
exemplar's hair colour.  Re-rendering a scene with another hair colour gives
the exact answer for that, plus exact hair / face / background masks.

Compositing model (back to front): background (incl. clothing) -> hair behind
the head -> skin (face, ears, neck, chest) -> hair in front (fringe, locks).
The masks are the per-pixel weights of that composite, so
``hair_mask + face_mask + background_mask == 1`` (up to float rounding) and
``image = Σ mask_k * colour_k``.  "face" means visible skin; "background" is
everything that is neither hair nor skin (clothing included).  Eyes, brows and
mouth are painted on the skin and belong to the face mask.  Nothing outside
the hair depends on the hair colour, so pixels with ``hair_mask == 0`` are
bit-identical across hair colours.
"""

from __future__ import annotations

import argparse
import colorsys
import dataclasses
import functools
import math
import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from lmt_train.data import SYNTHETIC_EXPORTS

__all__ = list(SYNTHETIC_EXPORTS)  # listed by the package, which imports this module lazily

# --------------------------------------------------------------------------
# Attributes
# --------------------------------------------------------------------------

#: Base hair colours (RGB 0..255), in a fixed order; each scene jitters them.
HAIR_COLOURS: Mapping[str, tuple[int, int, int]] = {
    "black": (32, 27, 26),
    "blond": (226, 188, 116),
    "brown": (112, 70, 42),
    "red": (172, 64, 32),
    "grey": (170, 170, 174),
}

#: Attribute name (CelebA spelling where CelebA has one) of each hair colour.
HAIR_ATTRIBUTES: Mapping[str, str] = {
    "black": "Black_Hair",
    "blond": "Blond_Hair",
    "brown": "Brown_Hair",
    "red": "Red_Hair",
    "grey": "Gray_Hair",
}

SMILING = "Smiling"

#: Every attribute a rendered sample is labelled with.
ATTRIBUTES: tuple[str, ...] = (*HAIR_ATTRIBUTES.values(), SMILING)

DEFAULT_ATTRIBUTES: tuple[str, ...] = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Smiling")

BACKGROUND_KINDS: tuple[str, ...] = ("gradient", "stripes", "checker", "blobs", "dots", "waves")

SPLITS: Mapping[str, int] = {"train": 0, "test": 1, "val": 2}

_SKIN_TONES = np.array(
    [(255, 226, 200), (238, 196, 162), (205, 148, 110), (150, 96, 66), (96, 62, 44)],
    dtype=np.float32,
) / 255.0
_IRIS_COLOURS = np.array(
    [(92, 56, 30), (66, 118, 178), (74, 126, 78), (132, 100, 48), (112, 124, 136)],
    dtype=np.float32,
) / 255.0
_BROW_COLOURS = np.array([(40, 32, 28), (78, 56, 38), (118, 92, 66)], dtype=np.float32) / 255.0
_WHITE = np.ones(3, dtype=np.float32)
_EYE_WHITE = np.array((0.96, 0.95, 0.93), dtype=np.float32)
_PUPIL = np.array((0.05, 0.04, 0.04), dtype=np.float32)
_OUTLINE = np.array((0.16, 0.11, 0.10), dtype=np.float32)
_MOUTH_INSIDE = np.array((0.36, 0.09, 0.10), dtype=np.float32)
_TEETH = np.array((0.97, 0.96, 0.92), dtype=np.float32)
_BLUSH = np.array((0.93, 0.45, 0.45), dtype=np.float32)

Colour = tuple[float, float, float]


# --------------------------------------------------------------------------
# Scene parameters
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneParams:
    """Everything random about one portrait.

    Positions in the image are normalised to [-1, 1] (x right, y down).  Head
    geometry is in "head units": multiples of ``head_size`` (the face's
    half-height) measured from the face centre, in the head's rolled frame.
    Colours are RGB floats in [0, 1].
    """

    # placement and pose
    centre: tuple[float, float]
    head_size: float
    face_aspect: float  # face half-width / half-height
    chin_taper: float  # narrows the lower face
    roll: float  # in-plane head tilt, radians
    yaw: float  # -1..1, slides features sideways to suggest a turned head
    skin_rgb: Colour
    # hair colour (the translated attribute) and its per-scene jitter
    hair_colour: str
    hair_tint: Colour  # multiplicative jitter around the base colour
    # hair shape
    hair_volume: float  # how far hair stands off the skull
    hair_length: float  # where the hair ends, head units below the face centre
    hair_flare: float  # extra width at the hair ends
    hair_end_curve: float  # U-shaped (>0) or straight (0) hair ends
    fringe_height: float  # hairline height at the parting (-0.8 high forehead .. -0.2 heavy bangs)
    temple_drop: float  # how far the hairline falls towards the temples
    fringe_jag: float  # depth of the pointed tips of fringe / hair ends
    fringe_jag_freq: float
    parting: float  # horizontal offset of the parting, head units
    side_lock_width: float  # strands framing the face (0 = none)
    # hair texture ("style": strands, waves, sheen)
    strand_freq: float
    strand_contrast: float
    strand_sweep: float  # combs the strands sideways
    wave_amp: float
    wave_freq: float
    sheen_height: float
    sheen_strength: float
    # face details
    smiling: bool
    eye_spacing: float
    eye_height: float
    eye_size: float
    iris_rgb: Colour
    brow_rgb: Colour  # independent of hair colour so the face never changes with it
    brow_lift: float
    mouth_width: float
    mouth_height: float
    lip_rgb: Colour
    blush: float
    # body
    shoulder_height: float
    shoulder_width: float
    neck_width: float
    neckline_depth: float
    clothing_rgb: Colour
    # background
    background_kind: str
    background_colours: tuple[Colour, Colour]
    background_freq: float
    background_angle: float
    # lighting (shades face, hair, clothing; tints the background)
    light_angle: float  # direction the light comes from, in the image plane
    light_elevation: float  # z component of the light direction
    light_strength: float
    ambient: float
    noise_seed: int  # seeds the noise lattices (strands, background texture)

    @property
    def hair_attribute(self) -> str:
        return HAIR_ATTRIBUTES[self.hair_colour]

    def hair_rgb(self) -> np.ndarray:
        """This scene's hair albedo: the base colour times its jitter."""
        base = np.asarray(HAIR_COLOURS[self.hair_colour], dtype=np.float32) / 255.0
        return np.clip(base * np.asarray(self.hair_tint, dtype=np.float32), 0.0, 1.0)

    def labels(self) -> dict[str, float]:
        """All :data:`ATTRIBUTES` as 0/1 floats."""
        labels = {name: float(name == self.hair_attribute) for name in HAIR_ATTRIBUTES.values()}
        labels[SMILING] = float(self.smiling)
        return labels

    def with_hair_colour(self, colour: str, tint: Colour | None = None) -> "SceneParams":
        """Same scene, another hair colour (keeps this scene's jitter unless given)."""
        _check_hair_colour(colour)
        tint = self.hair_tint if tint is None else tint
        return dataclasses.replace(self, hair_colour=colour, hair_tint=tint)

    def with_hair_colour_of(self, exemplar: "SceneParams") -> "SceneParams":
        """Same scene with exactly the exemplar's hair albedo (base colour and jitter)."""
        return self.with_hair_colour(exemplar.hair_colour, exemplar.hair_tint)


def _check_hair_colour(colour: str) -> str:
    if colour not in HAIR_COLOURS:
        raise ValueError(f"unknown hair colour {colour!r}; expected one of {tuple(HAIR_COLOURS)}")
    return colour


def _random_colour(rng: np.random.Generator, hue: float, saturation: tuple, value: tuple) -> Colour:
    return colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(*saturation), rng.uniform(*value))


def _sample_skin(rng: np.random.Generator) -> np.ndarray:
    # Interpolate along a light-to-dark ramp of plausible skin tones.
    position = rng.uniform(0, len(_SKIN_TONES) - 1)
    low = int(position)
    high = min(low + 1, len(_SKIN_TONES) - 1)
    return _SKIN_TONES[low] + (position - low) * (_SKIN_TONES[high] - _SKIN_TONES[low])


def _as_colour(values) -> Colour:
    return tuple(float(v) for v in values)


def sample_scene(rng: np.random.Generator, hair_colours: Sequence[str] | None = None) -> SceneParams:
    """Draw a random scene.  ``hair_colours`` restricts the hair colour choice."""
    colours = tuple(hair_colours) if hair_colours else tuple(HAIR_COLOURS)
    for colour in colours:
        _check_hair_colour(colour)
    u = rng.uniform

    head_size = u(0.3, 0.43)
    hair_volume = u(0.1, 0.5)
    # Keep the top of the hair inside the frame.
    top_margin = (1.25 + 0.7 * hair_volume) * head_size - 0.98
    centre = (u(-0.16, 0.16), u(max(-0.1, top_margin), 0.14))
    hair_length = u(0.2, 2.9) if rng.random() < 0.8 else u(0.15, 0.45)
    smiling = bool(rng.random() < 0.5)
    skin = _sample_skin(rng)
    lip = np.clip(skin * np.array((0.86, 0.55, 0.55)) + np.array((0.08, 0.0, 0.0)), 0, 1)
    face_aspect = u(0.72, 0.86)
    fringe_height = u(-0.85, -0.25)
    parting = u(-0.3, 0.3)
    # A hairline that falls fast towards the temples must not hide the eyes.
    eye_reach = (0.55 + abs(parting)) / face_aspect
    temple_drop = min(u(0.3, 1.0), max((-0.18 - fringe_height) / eye_reach**2, 0.05))
    background_hue = u()
    background_colours = (
        _random_colour(rng, background_hue, (0.1, 0.6), (0.45, 0.95)),
        _random_colour(rng, background_hue + u(-0.35, 0.35), (0.1, 0.7), (0.3, 0.95)),
    )
    return SceneParams(
        centre=centre,
        head_size=head_size,
        face_aspect=face_aspect,
        chin_taper=u(0.0, 0.3),
        roll=u(-0.25, 0.25),
        yaw=u(-1.0, 1.0),
        skin_rgb=_as_colour(skin),
        hair_colour=colours[rng.integers(len(colours))],
        hair_tint=_as_colour(u(0.9, 1.1) * u(0.93, 1.07, size=3)),
        hair_volume=hair_volume,
        hair_length=hair_length,
        hair_flare=u(0.0, 0.45),
        hair_end_curve=u(0.0, 0.5),
        fringe_height=fringe_height,
        temple_drop=temple_drop,
        fringe_jag=u(0.0, 0.12),
        fringe_jag_freq=u(3.0, 7.0),
        parting=parting,
        side_lock_width=u(0.06, 0.2) if hair_length > 0.7 and rng.random() < 0.5 else 0.0,
        strand_freq=u(10.0, 28.0),
        strand_contrast=u(0.15, 0.4),
        strand_sweep=u(-0.5, 0.5),
        wave_amp=u(0.0, 0.08),
        wave_freq=u(4.0, 12.0),
        sheen_height=u(-0.9, -0.45),
        sheen_strength=u(0.05, 0.35),
        smiling=smiling,
        eye_spacing=u(0.3, 0.4),
        eye_height=u(-0.02, 0.1),
        eye_size=u(0.085, 0.12),
        iris_rgb=_as_colour(_IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))]),
        brow_rgb=_as_colour(_BROW_COLOURS[rng.integers(len(_BROW_COLOURS))]),
        brow_lift=u(0.0, 0.08),
        mouth_width=u(0.2, 0.3),
        mouth_height=u(0.52, 0.62),
        lip_rgb=_as_colour(lip),
        blush=u(0.0, 0.35),
        shoulder_height=u(1.25, 1.5),
        shoulder_width=u(1.5, 2.1),
        neck_width=u(0.3, 0.4),
        neckline_depth=u(0.3, 0.7),
        clothing_rgb=_random_colour(rng, u(), (0.25, 0.8), (0.25, 0.85)),
        background_kind=BACKGROUND_KINDS[rng.integers(len(BACKGROUND_KINDS))],
        background_colours=background_colours,
        background_freq=u(3.0, 9.0),
        background_angle=u(0, math.pi),
        light_angle=u(0, 2 * math.pi),
        light_elevation=u(0.55, 0.85),
        light_strength=u(0.5, 0.8),
        ambient=u(0.3, 0.5),
        noise_seed=int(rng.integers(2**31)),
    )


# --------------------------------------------------------------------------
# Geometry helpers (signed distances in the units of their inputs)
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1]; cached because every render needs them."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) * np.float32(2.0 / size) - 1.0
    y, x = np.meshgrid(coords, coords, indexing="ij")
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def _coverage(distance: np.ndarray, pixel: float) -> np.ndarray:
    """1 inside, 0 outside, a linear ramp one pixel wide across the edge (anti-aliasing).

    Exactly 0 beyond half a pixel outside, which keeps masks truly zero there.
    """
    return np.clip(0.5 - distance * (1.0 / pixel), 0.0, 1.0)


def _ellipse_distance(x: np.ndarray, y: np.ndarray, rx, ry) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse (exact enough at its edge)."""
    qx, qy = x / rx, y / ry
    radius = np.sqrt(qx * qx + qy * qy)
    gradient = np.sqrt((qx / rx) ** 2 + (qy / ry) ** 2) + 1e-6
    return (radius - 1.0) * radius / gradient


def _triangle_wave(t: np.ndarray) -> np.ndarray:
    """Peaks of 1 at integers, 0 half-way between: pointed tips of hair."""
    return np.abs(t - np.floor(t) - 0.5) * 2.0


def _smoothstep(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def _value_noise_1d(table: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Smoothly interpolated random values along t (one per integer), in [0, 1]."""
    cell = np.floor(t)
    frac = _smoothstep(t - cell)
    index = cell.astype(np.int64) % len(table)
    low = table[index]
    high = table[(index + 1) % len(table)]
    return low + frac * (high - low)


def _value_noise_2d(lattice: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth 2-D noise from a random lattice, x/y in lattice cells (wraps around)."""
    rows, cols = lattice.shape
    flat = lattice.ravel()
    cell_x, cell_y = np.floor(x), np.floor(y)
    fx, fy = _smoothstep(x - cell_x), _smoothstep(y - cell_y)
    ix = cell_x.astype(np.intp) % cols
    iy = cell_y.astype(np.intp) % rows
    row0, row1 = iy * cols, ((iy + 1) % rows) * cols
    ix1 = (ix + 1) % cols
    top = flat[row0 + ix]
    top += fx * (flat[row0 + ix1] - top)
    bottom = flat[row1 + ix]
    bottom += fx * (flat[row1 + ix1] - bottom)
    return top + fy * (bottom - top)


def _light_vector(scene: SceneParams) -> tuple[float, float, float]:
    planar = math.sqrt(1.0 - scene.light_elevation**2)
    return (
        math.cos(scene.light_angle) * planar,
        math.sin(scene.light_angle) * planar,
        scene.light_elevation,
    )


def _lambert(nx: np.ndarray, ny: np.ndarray, scene: SceneParams) -> np.ndarray:
    """Diffuse shading of a bulging surface, normalised so a front-facing patch keeps its albedo."""
    lx, ly, lz = _light_vector(scene)
    nz = np.sqrt(np.clip(1.0 - nx * nx - ny * ny, 0.0, 1.0))
    facing = np.maximum(nx * lx + ny * ly + nz * lz, 0.0)
    return (scene.ambient + scene.light_strength * facing) / (scene.ambient + scene.light_strength * lz)


def _paint(canvas: np.ndarray, coverage: np.ndarray, colour) -> None:
    """Alpha-blend a colour into an (H, W, 3) canvas in place."""
    canvas += coverage[..., None] * (np.asarray(colour, dtype=np.float32) - canvas)


@dataclass(frozen=True)
class _Frame:
    """Pixel coordinates in the head's frame (head units) and the pixel size in those units."""

    x: np.ndarray
    y: np.ndarray
    pixel: float


def _head_frame(scene: SceneParams, size: int) -> _Frame:
    x, y = _pixel_grid(size)
    cx, cy = scene.centre
    cos_r, sin_r = math.cos(scene.roll), math.sin(scene.roll)
    scale = 1.0 / scene.head_size
    dx, dy = x - cx, y - cy
    head_x = (cos_r * scale) * dx + (sin_r * scale) * dy
    head_y = (cos_r * scale) * dy - (sin_r * scale) * dx
    return _Frame(head_x, head_y, (2.0 / size) * scale)


# --------------------------------------------------------------------------
# Background
# --------------------------------------------------------------------------


def _background_pattern(scene: SceneParams, x, y, pixel: float, rng: np.random.Generator) -> np.ndarray:
    """Mixing weight in [0, 1] between the two background colours."""
    kind, freq = scene.background_kind, scene.background_freq
    cos_a, sin_a = math.cos(scene.background_angle), math.sin(scene.background_angle)
    along = cos_a * x + sin_a * y
    across = cos_a * y - sin_a * x
    if kind == "gradient":
        wobble = _value_noise_2d(rng.random((4, 4), dtype=np.float32), x + 2.0, y + 2.0) - 0.5
        return np.clip(0.5 + 0.5 * along + 0.15 * wobble, 0.0, 1.0)
    if kind == "stripes":
        # Edge distance ~ sin / (angular frequency); anti-aliases and fades when stripes get sub-pixel.
        omega = freq * math.pi
        return _coverage(-np.sin(omega * along) / omega, pixel)
    if kind == "checker":
        omega = freq * math.pi
        return _coverage(-np.sin(omega * along) * np.sin(omega * across) / omega, pixel)
    if kind == "blobs":
        cells = 0.5 * freq
        noise = _value_noise_2d(rng.random((8, 8), dtype=np.float32), (x + 1.0) * cells, (y + 1.0) * cells)
        return np.clip((noise - 0.5) * 4.0 + 0.5, 0, 1)
    if kind == "dots":
        spacing = 2.0 / freq
        gx = along / spacing - np.round(along / spacing)
        gy = across / spacing - np.round(across / spacing)
        return _coverage((np.sqrt(gx * gx + gy * gy) - 0.28) * spacing, pixel)
    if kind == "waves":
        omega = freq * math.pi
        phase = omega * along + 1.5 * np.sin(omega * 0.5 * across)
        return _coverage(-np.sin(phase) / omega, pixel * 2.0)
    raise ValueError(f"unknown background kind {kind!r}")


@functools.lru_cache(maxsize=16)
def _grain(size: int) -> np.ndarray:
    """Fine "paper" grain on a fixed lattice, so it looks alike at every resolution (cached: it is costly)."""
    x, y = _pixel_grid(size)
    lattice = np.random.default_rng(12345).random((64, 64)).astype(np.float32)
    grain = _value_noise_2d(lattice, (x + 1) * 24, (y + 1) * 24) - 0.5
    grain.flags.writeable = False
    return grain


def _scene_grain(size: int, rng: np.random.Generator) -> np.ndarray:
    # A random flip / transpose of the shared grain keeps scenes from sharing one pattern.
    grain = _grain(size)
    variant = int(rng.integers(8))
    if variant & 1:
        grain = grain[::-1]
    if variant & 2:
        grain = grain[:, ::-1]
    if variant & 4:
        grain = grain.T
    return grain


def _background(scene: SceneParams, size: int, rng: np.random.Generator) -> np.ndarray:
    x, y = _pixel_grid(size)
    pattern = _background_pattern(scene, x, y, 2.0 / size, rng)
    first, second = (np.asarray(c, dtype=np.float32) for c in scene.background_colours)
    canvas = first + pattern[..., None] * (second - first)
    lx, ly, _ = _light_vector(scene)
    light = 1.0 + 0.12 * (lx * x + ly * y) - 0.09 * (x * x + y * y) + 0.06 * _scene_grain(size, rng)
    canvas *= light[..., None]
    return canvas


# --------------------------------------------------------------------------
# Body: clothing (background layer) and skin
# --------------------------------------------------------------------------


def _clothing(scene: SceneParams, frame: _Frame, canvas: np.ndarray) -> None:
    """Shoulders in clothing, painted onto the background canvas."""
    # Rounded shoulders on top, straight sides below, running off the bottom of the frame.
    shoulder_drop = 0.9
    body_y = frame.y - (scene.shoulder_height + shoulder_drop)
    distance = _ellipse_distance(frame.x, np.minimum(body_y, 0.0), scene.shoulder_width, shoulder_drop)
    coverage = _coverage(distance, frame.pixel)
    normal_x = np.clip(frame.x / scene.shoulder_width, -1, 1)
    normal_y = np.clip(body_y / shoulder_drop, -1, 0) * 0.8
    colour = np.asarray(scene.clothing_rgb, dtype=np.float32) * _lambert(normal_x, normal_y, scene)[..., None]
    _paint(canvas, coverage, colour)


def _face_half_width(scene: SceneParams, y: np.ndarray) -> np.ndarray:
    """Face ellipse half-width scale, narrowed towards the chin and by head turn."""
    below = np.clip(y, 0.0, 1.3)  # constant past the chin, where only the neck is
    turn = 1.0 - 0.06 * abs(scene.yaw)
    return scene.face_aspect * turn * (1.0 - scene.chin_taper * below * below)


def _skin_distances(scene: SceneParams, frame: _Frame) -> dict[str, np.ndarray]:
    x, y = frame.x, frame.y
    face = _ellipse_distance(x, y, _face_half_width(scene, y), 1.0)
    ear_x = scene.face_aspect * (1.0 - 0.06 * abs(scene.yaw)) * 0.97
    ears = np.minimum(
        _ellipse_distance(x - ear_x - 0.04 * scene.yaw, y - 0.08, 0.13, 0.2),
        _ellipse_distance(x + ear_x - 0.04 * scene.yaw, y - 0.08, 0.13, 0.2),
    )
    neck = np.maximum(np.abs(x) - scene.neck_width, np.maximum(0.2 - y, y - scene.shoulder_height - 0.12))
    # Open collar: skin in a U-shaped neckline below the neck.
    opening = scene.neck_width / 0.62
    collar = scene.shoulder_height - 0.15 + scene.neckline_depth * (1.0 - (x / opening) ** 2)
    chest = np.maximum(np.maximum(y - collar, np.abs(x) - opening), scene.shoulder_height - 0.2 - y)
    return {"face": face, "ears": ears, "body": np.minimum(neck, chest)}


def _eyes(scene: SceneParams, frame: _Frame, canvas: np.ndarray) -> None:
    x, y, pixel = frame.x, frame.y, frame.pixel
    size = scene.eye_size
    openness = 0.55 if scene.smiling else 0.8  # smiling squints the eyes
    gaze = 0.3 * size * scene.yaw
    for side in (-1.0, 1.0):
        ex = x - (side * scene.eye_spacing + 0.15 * scene.yaw)
        ey = y - scene.eye_height
        sclera = _ellipse_distance(ex, ey, 1.35 * size, openness * size)
        _paint(canvas, _coverage(sclera - 0.022, pixel), _OUTLINE)
        sclera_cover = _coverage(sclera, pixel)
        _paint(canvas, sclera_cover, _EYE_WHITE)
        iris = np.sqrt((ex - gaze) ** 2 + ey * ey)
        _paint(canvas, _coverage(iris - 0.62 * size, pixel) * sclera_cover, scene.iris_rgb)
        _paint(canvas, _coverage(iris - 0.3 * size, pixel) * sclera_cover, _PUPIL)
        glint = np.sqrt((ex - gaze - 0.2 * size) ** 2 + (ey + 0.2 * size) ** 2)
        _paint(canvas, _coverage(glint - 0.12 * size, pixel) * sclera_cover, _WHITE)
        # Brow: a thick arc above the eye.
        bx = (ex + side * 0.1 * size) / (1.6 * size)
        arc = scene.eye_height - 1.75 * size - scene.brow_lift - 0.05 * (1.0 - bx * bx) - 0.04 * side * bx
        brow = np.maximum(np.abs(y - arc) - 0.035, (np.abs(bx) - 1.0) * 1.6 * size)
        _paint(canvas, _coverage(brow, pixel), scene.brow_rgb)


def _mouth(scene: SceneParams, frame: _Frame, canvas: np.ndarray) -> None:
    x, y, pixel = frame.x, frame.y, frame.pixel
    half_width = scene.mouth_width
    t = (x - 0.12 * scene.yaw) / half_width
    bulge = np.clip(1.0 - t * t, 0.0, None)
    if scene.smiling:
        # An open "D": upper lip nearly straight, lower lip a deep curve, closed at the corners.
        upper = scene.mouth_height - 0.06 * bulge
        lower = scene.mouth_height + 0.8 * half_width * bulge
        opening = np.maximum(np.maximum(upper - y, y - lower), np.abs(t) - 1.0)
        _paint(canvas, _coverage(opening - 0.018, pixel), scene.lip_rgb)
        _paint(canvas, _coverage(opening, pixel), _MOUTH_INSIDE)
        teeth = np.maximum(opening, y - (upper + 0.35 * (lower - upper)))
        _paint(canvas, _coverage(teeth, pixel), _TEETH)
    else:
        line = scene.mouth_height + 0.02 * bulge
        lips = np.maximum(np.abs(y - line) - 0.045 * np.sqrt(bulge), np.abs(t) - 1.0)
        _paint(canvas, _coverage(lips, pixel), scene.lip_rgb)
        seam = np.maximum(np.abs(y - line) - 0.008, np.abs(t) - 0.95)
        _paint(canvas, _coverage(seam, pixel), _OUTLINE)


def _nose_and_cheeks(scene: SceneParams, frame: _Frame, canvas: np.ndarray) -> None:
    x, y = frame.x, frame.y
    skin = np.asarray(scene.skin_rgb, dtype=np.float32)
    nose_x = x - 0.22 * scene.yaw
    nostrils = _ellipse_distance(nose_x, y - 0.36, 0.1, 0.045)
    _paint(canvas, 0.45 * _coverage(nostrils, frame.pixel * 2.0), skin * 0.62)
    cheek_strength = scene.blush + (0.25 if scene.smiling else 0.0)
    cheek_y = (y - 0.38 + (0.04 if scene.smiling else 0.0)) ** 2
    cheeks = np.exp(-((x - 0.45 - 0.1 * scene.yaw) ** 2 + cheek_y) * 28.0)
    cheeks += np.exp(-((x + 0.45 - 0.1 * scene.yaw) ** 2 + cheek_y) * 28.0)
    _paint(canvas, cheek_strength * cheeks, _BLUSH * skin * 1.1)


def _skin(scene: SceneParams, frame: _Frame) -> tuple[np.ndarray, np.ndarray]:
    """Skin coverage (face, ears, neck, chest) and its shaded, painted colour."""
    x, y = frame.x, frame.y
    distances = _skin_distances(scene, frame)
    head = np.minimum(distances["face"], distances["ears"])
    coverage = _coverage(np.minimum(head, distances["body"]), frame.pixel)

    skin = np.asarray(scene.skin_rgb, dtype=np.float32)
    face_shade = _lambert(np.clip(x / _face_half_width(scene, y), -1, 1), np.clip(y, -1, 1), scene)
    body_shade = 0.82 * _lambert(np.clip(x / (2.5 * scene.neck_width), -1, 1), np.zeros_like(x), scene)
    head_part = _coverage(head, frame.pixel)
    shade = body_shade + head_part * (face_shade - body_shade)
    canvas = skin * shade[..., None]
    # Features lie inside the face, so paint them on a crop around it: far cheaper.
    rows, cols = _face_window(scene, x.shape[0])
    face_frame = _Frame(x[rows, cols], y[rows, cols], frame.pixel)
    face_canvas = canvas[rows, cols]
    _nose_and_cheeks(scene, face_frame, face_canvas)
    _eyes(scene, face_frame, face_canvas)
    _mouth(scene, face_frame, face_canvas)
    return coverage, canvas


def _face_window(scene: SceneParams, size: int) -> tuple[slice, slice]:
    """Pixel window holding the whole face ellipse, whatever the roll."""
    radius = 1.08 * scene.head_size
    cx, cy = scene.centre

    def span(centre: float) -> slice:
        low = int(math.floor((centre - radius + 1.0) * 0.5 * size))
        high = int(math.ceil((centre + radius + 1.0) * 0.5 * size)) + 1
        return slice(max(low, 0), min(high, size))

    return span(cy), span(cx)


# --------------------------------------------------------------------------
# Hair
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _HairShape:
    cap_y: float  # centre of the ellipse that caps the skull
    cap_rx: float
    cap_ry: float
    drape_length: float  # distance from cap_y to the hair ends


def _hair_shape(scene: SceneParams) -> _HairShape:
    volume = scene.hair_volume
    cap_y = -0.15 - 0.15 * volume
    return _HairShape(
        cap_y=cap_y,
        cap_rx=scene.face_aspect + 0.12 + 0.6 * volume,
        cap_ry=1.07 + 0.55 * volume,
        drape_length=max(scene.hair_length - cap_y, 0.3),
    )


def _hair_half_width(scene: SceneParams, shape: _HairShape, y: np.ndarray) -> np.ndarray:
    """Half-width of the hair silhouette at height y: skull-shaped on top, flaring towards the ends."""
    above = np.clip((shape.cap_y - y) / shape.cap_ry, 0.0, 1.0)
    below = np.clip((y - shape.cap_y) / shape.drape_length, 0.0, 1.0)
    return shape.cap_rx * np.sqrt(np.maximum(1.0 - above * above, 0.02)) + scene.hair_flare * below


def _hair_distances(scene: SceneParams, frame: _Frame, shape: _HairShape) -> tuple[np.ndarray, np.ndarray]:
    """Signed distances of the hair behind the head and the hair in front of the face."""
    x, y = frame.x, frame.y
    width = _hair_half_width(scene, shape, y)
    cap = _ellipse_distance(x, y - shape.cap_y, shape.cap_rx, shape.cap_ry)
    end_width = shape.cap_rx + scene.hair_flare
    ends = (
        scene.hair_length
        - scene.hair_end_curve * (x / end_width) ** 2
        + scene.fringe_jag * _triangle_wave(x * scene.fringe_jag_freq)
    )
    drape = np.maximum(np.abs(x) - width, shape.cap_y - y)
    back = np.maximum(np.minimum(cap, drape), y - ends)

    across = (x - scene.parting) / scene.face_aspect
    hairline = (
        scene.fringe_height
        + scene.temple_drop * across * across
        + scene.fringe_jag * _triangle_wave((x - scene.parting) * scene.fringe_jag_freq)
    )
    front = np.maximum(cap, y - hairline)
    if scene.side_lock_width > 0:
        lock_end = min(scene.hair_length, 1.05)
        inner = _face_half_width(scene, y) - scene.side_lock_width
        locks = np.maximum(np.maximum(inner - np.abs(x), np.abs(x) - width), y - lock_end)
        front = np.minimum(front, locks)
    return back, front


def _detail_weight(period_px: float) -> float:
    """Fades texture whose period nears two pixels, instead of letting it alias."""
    return float(np.clip((period_px - 2.0) / 2.0, 0.0, 1.0))


def _hair_colour_field(
    scene: SceneParams, frame: _Frame, shape: _HairShape, albedo: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Textured, shaded hair colour at the frame's pixels, shape (..., 3)."""
    x, y = frame.x, frame.y
    width = _hair_half_width(scene, shape, y)
    # Strand coordinate: constant along strands that fan out from the parting and fall down the sides.
    combed = scene.strand_sweep * np.minimum(y - shape.cap_y, 0.0)
    wavy_x = x + scene.wave_amp * np.sin(y * scene.wave_freq) + combed
    strand = (wavy_x - scene.parting * 0.5) / width
    # The strand coordinate spans about ±1 over ±cap_rx head units.
    strand_period_px = shape.cap_rx / (scene.strand_freq * frame.pixel)
    coarse_weight = _detail_weight(strand_period_px)
    fine_weight = _detail_weight(strand_period_px / 2.7)
    tables = rng.random((2, 256), dtype=np.float32)
    coarse = _value_noise_1d(tables[0], strand * scene.strand_freq)
    fine = _value_noise_1d(tables[1], strand * scene.strand_freq * 2.7)
    clumps = _value_noise_2d(rng.random((6, 6), dtype=np.float32), strand * 3.0 + 3.0, y * 1.5 + 3.0)
    texture = 0.45 * coarse_weight * (coarse - 0.5) + 0.35 * fine_weight * (fine - 0.5) + 0.3 * (clumps - 0.5)
    brightness = 1.0 + 2.0 * scene.strand_contrast * texture

    normal_x = np.clip(x / width, -1.0, 1.0)
    normal_y = np.clip((y - shape.cap_y) / shape.cap_ry, -1.0, 0.0)
    shade = _lambert(normal_x, normal_y, scene) * brightness
    # Sheen: a bright band across the crown, broken up by the strands.
    band = y - scene.sheen_height - 0.3 * normal_x * normal_x
    sheen = scene.sheen_strength * np.exp(-band * band * 40.0) * (0.4 + coarse)
    sheen_colour = 0.5 * albedo + 0.5
    colour = albedo * shade[..., None] + sheen[..., None] * sheen_colour
    return np.clip(colour, 0.0, 1.0)


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    """A rendered portrait.  Masks are (H, W) float32 weights that sum to 1."""

    image: np.ndarray  # (H, W, 3) uint8
    hair_mask: np.ndarray
    face_mask: np.ndarray
    background_mask: np.ndarray
    labels: dict[str, float]
    hair_colour: str


def render(scene: SceneParams, size: int, hair_colour: str | None = None) -> Rendered:
    """Render ``scene`` as a ``size`` x ``size`` image.

    ``hair_colour`` (a :data:`HAIR_COLOURS` name) replaces the scene's hair
    colour, keeping its jitter; use :meth:`SceneParams.with_hair_colour_of`
    to take another scene's exact hair albedo.
    """
    if hair_colour is not None:
        scene = scene.with_hair_colour(hair_colour)
    size = int(size)
    if size < 4:
        raise ValueError(f"size must be at least 4, got {size}")
    # One generator per scene seed, consumed in a fixed order: same noise at every resolution.
    noise = np.random.default_rng(scene.noise_seed)
    frame = _head_frame(scene, size)
    shape = _hair_shape(scene)

    background = _background(scene, size, noise)
    _clothing(scene, frame, background)
    skin_alpha, skin = _skin(scene, frame)
    back_distance, front_distance = _hair_distances(scene, frame, shape)
    back_alpha = _coverage(back_distance, frame.pixel)
    front_alpha = _coverage(front_distance, frame.pixel)
    # Over-compositing weights, back to front: background, back hair, skin, front hair.
    front_weight = front_alpha
    skin_weight = skin_alpha * (1.0 - front_alpha)
    back_weight = back_alpha * (1.0 - skin_alpha) * (1.0 - front_alpha)
    background_weight = (1.0 - back_alpha) * (1.0 - skin_alpha) * (1.0 - front_alpha)
    hair_weight = front_weight + back_weight

    image = background_weight[..., None] * background + skin_weight[..., None] * skin
    # Hair colour only where there is hair: cheaper, and pixels without hair never see it.
    hair_pixels = np.flatnonzero(hair_weight)
    hair_frame = _Frame(frame.x.ravel()[hair_pixels], frame.y.ravel()[hair_pixels], frame.pixel)
    hair = _hair_colour_field(scene, hair_frame, shape, scene.hair_rgb(), noise)
    # Back hair sits in the head's shadow.
    shadowed_weight = (front_weight + 0.8 * back_weight).ravel()[hair_pixels]
    image.reshape(-1, 3)[hair_pixels] += shadowed_weight[:, None] * hair
    pixels = np.clip(image * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)
    return Rendered(
        image=pixels,
        hair_mask=hair_weight.astype(np.float32),
        face_mask=skin_weight.astype(np.float32),
        background_mask=background_weight.astype(np.float32),
        labels=scene.labels(),
        hair_colour=scene.hair_colour,
    )


# --------------------------------------------------------------------------
# Translation pairs
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TranslationPair:
    """An input, an exemplar with another hair colour, and the exact translation."""

    input_scene: SceneParams
    exemplar_scene: SceneParams
    input: Rendered
    exemplar: Rendered
    target: Rendered


def _as_generator(seed_or_rng) -> np.random.Generator:
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    return np.random.default_rng(seed_or_rng)


def make_translation_pair(
    seed_or_rng, size: int, hair_colours: Sequence[str] | None = None
) -> TranslationPair:
    """Draw an input scene and an exemplar scene with a different hair colour.

    The ground-truth translation (``target``) is the input scene re-rendered
    with the exemplar's hair albedo: it keeps the input's hair shape, texture
    and shading (and everything outside the hair, bit for bit) and takes the
    exemplar's colour, including the exemplar's per-scene colour jitter, so the
    target's base hair colour is exactly the exemplar's.
    """
    rng = _as_generator(seed_or_rng)
    colours = tuple(hair_colours) if hair_colours else tuple(HAIR_COLOURS)
    if len(set(colours)) < 2:
        raise ValueError("a translation pair needs at least two hair colours to choose from")
    input_scene = sample_scene(rng, colours)
    exemplar_scene = sample_scene(rng, [c for c in colours if c != input_scene.hair_colour])
    return TranslationPair(
        input_scene=input_scene,
        exemplar_scene=exemplar_scene,
        input=render(input_scene, size),
        exemplar=render(exemplar_scene, size),
        target=render(input_scene.with_hair_colour_of(exemplar_scene), size),
    )


# --------------------------------------------------------------------------
# Torch datasets
# --------------------------------------------------------------------------


def hair_colours_for(attributes: Sequence[str]) -> tuple[str, ...]:
    """Hair colours named by ``attributes``; all colours if none are named."""
    chosen = tuple(colour for colour, name in HAIR_ATTRIBUTES.items() if name in attributes)
    return chosen or tuple(HAIR_COLOURS)


def label_vector(labels: Mapping[str, float], attributes: Sequence[str]) -> np.ndarray:
    """Multi-hot float32 vector of ``labels`` ordered as ``attributes``."""
    return np.array([labels[name] for name in attributes], dtype=np.float32)


def _check_attributes(attributes: Sequence[str]) -> tuple[str, ...]:
    attributes = tuple(attributes)
    unknown = [name for name in attributes if name not in ATTRIBUTES]
    if unknown:
        raise ValueError(f"unknown attributes {unknown}; known: {ATTRIBUTES}")
    return attributes


def _scene_rng(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    # Seeding with (seed, split, index, stream) keeps splits and dataset kinds disjoint and
    # makes every item reproducible on its own (any worker, any order).
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLITS)}")
    return np.random.default_rng([seed, SPLITS[split], index, stream])


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def _mask_tensor(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]


class _IndexedDataset(Dataset):
    #: hair colours the dataset must be able to draw from (a translation pair changes one into another)
    min_hair_colours = 1

    def __init__(
        self,
        size: int = 128,
        length: int = 10000,
        seed: int = 0,
        attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
        split: str = "train",
    ):
        self.size = int(size)
        self.length = int(length)
        self.seed = int(seed)
        self.split = split
        self.attributes = _check_attributes(attributes)
        self.hair_colours = hair_colours_for(self.attributes)
        _scene_rng(self.seed, split, 0, 0)  # validates the split early
        if len(self.hair_colours) < self.min_hair_colours:
            raise ValueError(f"{type(self).__name__} needs at least {self.min_hair_colours} hair-colour attributes")

    def __len__(self) -> int:
        return self.length

    def _checked_index(self, index: int) -> int:
        index = int(index)
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for length {self.length}")
        return index


class SyntheticPortraits(_IndexedDataset):
    """Labelled procedural portraits, deterministic per (seed, split, index).

    Hair colours are drawn only among the hair attributes listed in
    ``attributes`` (all colours if none is listed), so every hair-colour label
    vector is one-hot over the chosen hair attributes.
    """

    def scene(self, index: int) -> SceneParams:
        index = self._checked_index(index)
        return sample_scene(_scene_rng(self.seed, self.split, index, 0), self.hair_colours)

    def __getitem__(self, index: int) -> dict:
        index = self._checked_index(index)
        rendered = render(self.scene(index), self.size)
        return {
            "image": image_to_tensor(rendered.image),
            "labels": torch.from_numpy(label_vector(rendered.labels, self.attributes)),
            "hair_mask": _mask_tensor(rendered.hair_mask),
            "face_mask": _mask_tensor(rendered.face_mask),
            "background_mask": _mask_tensor(rendered.background_mask),
            "index": index,
        }


class SyntheticPairs(_IndexedDataset):
    """(input, exemplar, ground-truth target) triples; see :func:`make_translation_pair`."""

    min_hair_colours = 2

    def pair(self, index: int) -> TranslationPair:
        index = self._checked_index(index)
        rng = _scene_rng(self.seed, self.split, index, 1)
        return make_translation_pair(rng, self.size, self.hair_colours)

    def __getitem__(self, index: int) -> dict:
        index = self._checked_index(index)
        pair = self.pair(index)
        item = {"index": index}
        for role in ("input", "exemplar", "target"):
            rendered: Rendered = getattr(pair, role)
            item[role] = image_to_tensor(rendered.image)
            item[f"{role}_labels"] = torch.from_numpy(label_vector(rendered.labels, self.attributes))
            for mask in ("hair_mask", "face_mask", "background_mask"):
                item[f"{role}_{mask}"] = _mask_tensor(getattr(rendered, mask))
        return item


# --------------------------------------------------------------------------
# Sample images and preview
# --------------------------------------------------------------------------


def save_sample_images(directory: str, n: int, size: int, seed: int = 0) -> list[str]:
    """Write ``n`` translation pairs as PNGs (pairNN_input/exemplar/target.png); returns the paths."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for number in range(n):
        pair = make_translation_pair(rng, size)
        for role in ("input", "exemplar", "target"):
            path = os.path.join(directory, f"pair{number:02d}_{role}.png")
            Image.fromarray(getattr(pair, role).image).save(path)
            paths.append(path)
    return paths


def preview_grid(n: int, size: int, seed: int = 0, gap: int = 2) -> np.ndarray:
    """One row per pair: input | exemplar | target | input hair mask."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        pair = make_translation_pair(rng, size)
        mask = np.repeat((pair.input.hair_mask * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=2)
        tiles = [pair.input.image, pair.exemplar.image, pair.target.image, mask]
        rows.append(join_tiles(tiles, axis=1, gap=gap))
    return join_tiles(rows, axis=0, gap=gap)


def join_tiles(tiles: list[np.ndarray], axis: int, gap: int) -> np.ndarray:
    """Concatenate uint8 tiles along `axis` with white gaps of `gap` pixels between them."""
    shape = list(tiles[0].shape)
    shape[axis] = gap
    spacer = np.full(shape, 255, dtype=np.uint8)
    pieces = []
    for tile in tiles:
        pieces += [tile, spacer]
    return np.concatenate(pieces[:-1], axis=axis)


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description="Write a preview grid of synthetic translation pairs.")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("-n", type=int, default=8, help="number of pairs (rows)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", action="store_true", help="also write the individual pair PNGs")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "synthetic_preview.png")
    Image.fromarray(preview_grid(args.n, args.size, args.seed)).save(path)
    if args.samples:
        save_sample_images(args.out, args.n, args.size, args.seed)
    print(path)
    return path


if __name__ == "__main__":
    main()

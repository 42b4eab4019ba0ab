"""Procedural eye images with exact ground truth, in a clean "synthetic" and a degraded "real" rendering.

Each sample is one eye region (default 36x60, the MPIIGaze normalised eye patch): skin with a lid crease,
an almond-shaped opening between the upper and lower eyelid, the sclera, and an iris with its pupil whose
centre is the gaze / pupil-centre label. Everything random about the geometry and the colours lives in
:class:`EyeParams`; everything random about the camera lives in :class:`RealParams`.

Two renderings of the same geometry (the MGST setting, reference/mgst.md §5):

* ``"synthetic"`` -- UnityEyes-like: flat shading under one fixed "indoor" light from above, clean iris
  texture, no noise, no blur, no reflections.
* ``"real"`` -- the same eye through a poor camera outdoors: skin and iris texture, eyelashes (some
  hanging over the opening), uneven lighting from a random direction plus a second light lobe, specular
  reflections (glints, most on the cornea), colour casts, gamma, sometimes grayscale (near-infrared
  trackers such as LPW's), defocus blur and sensor noise.

Ground truth (identical for both renderings, since the geometry is shared):

* ``mask``        attention region = visible iris + pupil (what MGST styles separately), soft coverage
* ``pupil_mask``  visible pupil; ``iris_mask`` visible iris incl. pupil; ``eye_mask`` the eye opening
* ``pupil_centre`` (x, y) in pixels of the rendered size (x right, y down, pixel (i, j) spans
  [j, j + 1) x [i, i + 1)); it is always inside the visible pupil (rejection sampling keeps it at least
  ``CENTRE_MARGIN`` pixels inside the opening)
* ``gaze``        the (gx, gy) in [-1, 1] the pupil position was drawn from

The masks come from the geometry only; eyelashes drawn over the eye in the "real" rendering do not
change them (they are annotations of the eye, as a human would draw them).

Determinism: sample ``i`` of a dataset depends only on (seed, split, i): the geometry uses the random
stream ``[seed, split, i, 0]`` and the camera the stream ``[seed, split, i, 1]``.

    python -m lmt_train.data.eyes -o eyes.png     # a preview grid: synthetic / real / mask rows
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["BASE_SIZE", "RENDERINGS", "EyeParams", "EyeSample", "RealParams", "SyntheticEyes",
           "eye_rng", "normalise_centre", "denormalise_centre", "render_eye", "sample_eye", "sample_real"]

BASE_SIZE = (36, 60)                   # (H, W) of the geometry's frame; other sizes scale it (5:3 only)
RENDERINGS = ("synthetic", "real", "both")
SPLITS: Mapping[str, int] = {"train": 0, "test": 1, "val": 2}
CENTRE_MARGIN = 1.5                    # base pixels between the pupil centre and either eyelid

_SKIN = np.array([(255, 224, 196), (236, 192, 158), (204, 150, 112), (150, 98, 68), (98, 64, 46)],
                 dtype=np.float32) / 255.0
_IRIS = np.array([(96, 60, 34), (70, 112, 170), (76, 122, 84), (128, 98, 52), (110, 122, 134)],
                 dtype=np.float32) / 255.0


# --------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class EyeParams:
    """Geometry and albedo of one eye, in the 60x36 base frame (pixels, x right, y down)."""

    centre: tuple[float, float]        # eye centre (between the corners)
    half_width: float                  # corner to centre
    upper_height: float                # upper lid height above the centre line at its peak
    lower_height: float                # lower lid depth below it
    lid_skew: float                    # moves the lids' peak towards one corner (-1..1)
    tilt: float                        # corner-to-corner slope (pixels of rise per half width)
    crease_gap: float                  # lid crease, pixels above the upper lid
    iris_radius: float
    pupil_ratio: float                 # pupil radius / iris radius (dilation)
    gaze: tuple[float, float]          # (gx, gy) in [-1, 1]
    pupil_centre: tuple[float, float]  # base-frame pixels; the label
    skin_rgb: tuple[float, float, float]
    sclera_rgb: tuple[float, float, float]
    iris_rgb: tuple[float, float, float]
    iris_phase: float                  # orientation of the iris streaks
    iris_streaks: int
    brightness: float                  # the synthetic renderer's only lighting variation

    def iris_radii(self) -> tuple[float, float]:
        """(rx, ry): the iris foreshortens horizontally as the eye turns sideways."""
        return self.iris_radius * (1.0 - 0.22 * abs(self.gaze[0])), self.iris_radius

    def lids(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """y of the upper and lower lid at base-frame x (they meet at the corners)."""
        cx, cy = self.centre
        t = (x - cx) / self.half_width
        bulge = np.clip(1.0 - t * t, 0.0, None) * np.clip(1.0 + self.lid_skew * t, 0.2, None)
        line = cy + self.tilt * t
        return line - self.upper_height * bulge ** 0.75, line + self.lower_height * bulge ** 0.9


@dataclass(frozen=True)
class RealParams:
    """The camera and scene nuisances of the "real" rendering."""

    lashes: tuple[tuple[float, ...], ...]   # (x0, y0, dx, dy, bend, width, darkness) per lash
    light_dir: tuple[float, float]          # direction the brightness increases towards
    light_slope: float
    ambient: float
    lobe: tuple[float, float, float, float]  # second light: x, y, radius, strength
    glints: tuple[tuple[float, float, float, float], ...]  # x, y, sigma, strength
    gains: tuple[float, float, float]       # colour cast
    offset: float
    gamma: float
    grayscale: bool
    blur: float                             # Gaussian sigma, base pixels
    noise: float                            # Gaussian sensor noise sigma
    texture: float                          # skin / iris texture strength
    noise_seed: int


def _colour(values) -> tuple[float, float, float]:
    return tuple(float(v) for v in values)


def sample_eye(rng: np.random.Generator) -> EyeParams:
    """Draw an eye whose pupil centre lies at least CENTRE_MARGIN pixels inside the opening."""
    u = rng.uniform
    h, w = BASE_SIZE
    centre = (w / 2 + u(-3.0, 3.0), h / 2 + u(-2.0, 2.0))
    half_width = u(19.0, 24.0)
    upper, lower = u(7.5, 12.0), u(4.5, 8.0)
    iris_radius = u(7.0, 9.5)
    skew, tilt = u(-0.25, 0.25), u(-1.5, 1.5)
    params = dict(centre=centre, half_width=half_width, upper_height=upper, lower_height=lower, lid_skew=skew,
                  tilt=tilt, crease_gap=u(3.0, 5.5), iris_radius=iris_radius, pupil_ratio=u(0.3, 0.55))
    probe = EyeParams(**params, gaze=(0.0, 0.0), pupil_centre=centre, skin_rgb=(0, 0, 0), sclera_rgb=(0, 0, 0),
                      iris_rgb=(0, 0, 0), iris_phase=0.0, iris_streaks=0, brightness=1.0)
    reach_x = (half_width - iris_radius * 0.5) * 0.7
    for _ in range(100):
        gaze = (u(-1.0, 1.0), u(-1.0, 1.0))
        px = centre[0] + gaze[0] * reach_x
        py = centre[1] + gaze[1] * 3.5
        top, bottom = probe.lids(np.array([px]))
        if top[0] + CENTRE_MARGIN <= py <= bottom[0] - CENTRE_MARGIN:
            break
    else:  # pragma: no cover - the ranges above make this practically unreachable
        gaze, px = (0.0, 0.0), centre[0]
        top, bottom = probe.lids(np.array([px]))
        py = float(top[0] + bottom[0]) / 2
    position = u(0, len(_SKIN) - 1)
    low = int(position)
    skin = _SKIN[low] + (position - low) * (_SKIN[min(low + 1, len(_SKIN) - 1)] - _SKIN[low])
    iris = np.clip(_IRIS[rng.integers(len(_IRIS))] * u(0.8, 1.2, 3), 0, 1)
    sclera = np.clip(np.array([0.93, 0.91, 0.88]) + u(-0.04, 0.03, 3), 0, 1)
    return EyeParams(**params, gaze=gaze, pupil_centre=(float(px), float(py)), skin_rgb=_colour(skin),
                     sclera_rgb=_colour(sclera), iris_rgb=_colour(iris), iris_phase=u(0, 2 * math.pi),
                     iris_streaks=int(rng.integers(10, 22)), brightness=u(0.92, 1.04))


def sample_real(rng: np.random.Generator, eye: EyeParams) -> RealParams:
    """Camera nuisances for `eye` (lashes start on its upper lid, most glints sit on its cornea)."""
    u = rng.uniform
    lashes = []
    for _ in range(int(rng.integers(6, 17))):
        t = u(-0.85, 0.95)
        x0 = eye.centre[0] + t * eye.half_width
        y0 = float(eye.lids(np.array([x0]))[0][0])
        if rng.random() < 0.3:      # hanging over the opening
            angle = u(0.35, 0.65) * math.pi + 0.15 * t
            length = u(3.0, 8.0)
        else:                       # pointing up and outwards
            angle = -u(0.3, 0.7) * math.pi + 0.5 * t
            length = u(2.5, 7.0)
        lashes.append((x0, y0, length * math.cos(angle), length * math.sin(angle), u(-1.5, 1.5),
                       u(0.45, 0.95), u(0.6, 0.95)))
    theta = u(0, 2 * math.pi)
    glints = []
    px, py = eye.pupil_centre
    for i in range(int(rng.integers(1, 4))):
        if i == 0 or rng.random() < 0.5:   # corneal reflection, near the pupil
            r, a = eye.iris_radius * math.sqrt(u(0, 0.7)), u(0, 2 * math.pi)
            gx, gy = px + r * math.cos(a), py + r * math.sin(a)
        else:
            gx, gy = eye.centre[0] + u(-0.7, 0.7) * eye.half_width, eye.centre[1] + u(-3, 3)
        glints.append((gx, gy, u(0.6, 1.6), u(0.5, 1.0)))
    gains = np.exp(u(-0.3, 0.3, 3))
    gains = gains / gains.mean() * u(0.8, 1.15)
    return RealParams(
        lashes=tuple(lashes), light_dir=(math.cos(theta), math.sin(theta)), light_slope=u(0.1, 0.5),
        ambient=u(0.55, 1.05), lobe=(u(0, BASE_SIZE[1]), u(0, BASE_SIZE[0]), u(10, 35), u(0.0, 0.5)),
        glints=tuple(glints), gains=_colour(gains), offset=u(-0.04, 0.08), gamma=float(np.exp(u(-0.35, 0.35))),
        grayscale=bool(rng.random() < 0.25), blur=u(0.3, 1.2), noise=u(0.01, 0.06), texture=u(0.03, 0.1),
        noise_seed=int(rng.integers(2**31)))


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


@dataclass
class EyeSample:
    """One rendered sample: float32 HxWx3 images in [0, 1], float32 HxW masks in [0, 1], labels in pixels."""

    synthetic: np.ndarray | None
    real: np.ndarray | None
    mask: np.ndarray                 # attention: visible iris + pupil
    pupil_mask: np.ndarray
    iris_mask: np.ndarray
    eye_mask: np.ndarray
    pupil_centre: np.ndarray         # (2,) x, y in pixels of this size
    gaze: np.ndarray                 # (2,)
    eye: EyeParams
    camera: RealParams | None


def _check_size(size) -> tuple[int, int]:
    h, w = (int(size[0]), int(size[1]))
    if h < 6 or w < 10 or h * BASE_SIZE[1] != w * BASE_SIZE[0]:
        raise ValueError(f"eye images are {BASE_SIZE[0]}:{BASE_SIZE[1]} (H:W), at least 6x10; got {h}x{w} "
                         "(e.g. 36x60, 48x80, 72x120)")
    return h, w


def _coverage(distance: np.ndarray, pixel: float) -> np.ndarray:
    """Area coverage of a pixel of side `pixel` by the region {distance < 0} (a linear ramp across the edge)."""
    return np.clip(0.5 - distance / pixel, 0.0, 1.0).astype(np.float32)


def _ellipse_distance(x, y, cx, cy, rx, ry) -> np.ndarray:
    r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return (r - 1.0) * min(rx, ry)


def _segment_distance(x, y, x0, y0, x1, y1) -> np.ndarray:
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
    return np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))


def _value_noise(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, cell: float) -> np.ndarray:
    """Smooth noise in [-1, 1] with features ~`cell` base pixels wide."""
    gw, gh = int(BASE_SIZE[1] / cell) + 3, int(BASE_SIZE[0] / cell) + 3
    lattice = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
    fx, fy = x / cell, y / cell
    ix, iy = np.floor(fx).astype(int), np.floor(fy).astype(int)
    tx, ty = fx - ix, fy - iy
    tx, ty = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty)
    ix, iy = np.clip(ix, 0, gw - 2), np.clip(iy, 0, gh - 2)
    a, b = lattice[iy, ix], lattice[iy, ix + 1]
    c, d = lattice[iy + 1, ix], lattice[iy + 1, ix + 1]
    return (a + (b - a) * tx) + ((c + (d - c) * tx) - (a + (b - a) * tx)) * ty


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an HxWxC image with reflected borders (sigma in this image's pixels)."""
    if sigma < 0.2:
        return image
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    out = image
    for axis in (0, 1):
        n = out.shape[axis]
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in range(out.ndim)], mode="reflect") \
            if n > radius else np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in range(out.ndim)],
                                      mode="edge")
        acc = np.zeros_like(out)
        for k, tap in enumerate(taps):
            acc += tap * np.take(padded, np.arange(k, k + n), axis=axis)
        out = acc
    return out


def _geometry(eye: EyeParams, size: tuple[int, int]):
    """Pixel-centre coordinates in the base frame and the soft masks of the eye at `size`."""
    h, w = size
    pixel = BASE_SIZE[1] / w                       # base-frame pixels per output pixel
    x = ((np.arange(w, dtype=np.float32) + 0.5) * pixel)[None, :].repeat(h, 0)
    y = ((np.arange(h, dtype=np.float32) + 0.5) * pixel)[:, None].repeat(w, 1)
    top, bottom = eye.lids(x[0])
    top, bottom = top[None, :], bottom[None, :]
    corner = np.abs(x - eye.centre[0]) - eye.half_width
    opening = _coverage(np.maximum(np.maximum(top - y, y - bottom), corner), pixel)
    rx, ry = eye.iris_radii()
    px, py = eye.pupil_centre
    iris = _coverage(_ellipse_distance(x, y, px, py, rx, ry), pixel)
    pupil = _coverage(_ellipse_distance(x, y, px, py, rx * eye.pupil_ratio, ry * eye.pupil_ratio), pixel)
    return x, y, pixel, top, bottom, opening, iris, pupil


def render_eye(eye: EyeParams, size=BASE_SIZE, rendering: str = "synthetic",
               camera: RealParams | None = None) -> EyeSample:
    """Render `eye` at `size` (H, W); rendering "synthetic", "real" (needs `camera`) or "both"."""
    if rendering not in RENDERINGS:
        raise ValueError(f"rendering must be one of {RENDERINGS}, got {rendering!r}")
    if rendering != "synthetic" and camera is None:
        raise ValueError("the real rendering needs its camera parameters (sample_real)")
    size = _check_size(size)
    x, y, pixel, top, bottom, opening, iris, pupil = _geometry(eye, size)
    want_syn, want_real = rendering in ("synthetic", "both"), rendering in ("real", "both")
    synthetic = _shade(eye, x, y, pixel, top, opening, iris, pupil, None) if want_syn else None
    real = _shade(eye, x, y, pixel, top, opening, iris, pupil, camera) if want_real else None
    scale = size[1] / BASE_SIZE[1]
    return EyeSample(
        synthetic=synthetic, real=real, mask=opening * iris, pupil_mask=opening * pupil, iris_mask=opening * iris,
        eye_mask=opening, pupil_centre=np.array(eye.pupil_centre, dtype=np.float32) * scale,
        gaze=np.array(eye.gaze, dtype=np.float32), eye=eye, camera=camera if want_real else None)


def _shade(eye: EyeParams, x, y, pixel, top, opening, iris, pupil, camera: RealParams | None) -> np.ndarray:
    real = camera is not None
    noise = np.random.default_rng(camera.noise_seed) if real else None
    px, py = eye.pupil_centre
    rx, ry = eye.iris_radii()
    # skin: lighter towards the brow, a soft crease above the upper lid, a dark lash line on the lid margin
    skin = np.asarray(eye.skin_rgb, dtype=np.float32)[None, None] * (0.9 + 0.1 * (1 - y / BASE_SIZE[0]))[..., None]
    crease = np.exp(-0.5 * ((y - (top - eye.crease_gap)) / 1.1) ** 2)
    skin = skin * (1 - 0.22 * crease)[..., None]
    lash_line = np.exp(-0.5 * ((y - (top - 0.4)) / 0.6) ** 2) * (np.abs(x - eye.centre[0]) < eye.half_width)
    skin = skin * (1 - 0.6 * lash_line)[..., None]
    # sclera, shadowed under the upper lid
    shadow = np.exp(-np.clip(y - top, 0, None) / 2.5)
    sclera = np.asarray(eye.sclera_rgb, dtype=np.float32)[None, None] * (1 - 0.3 * shadow)[..., None]
    # iris: radial streaks, a darker limbal ring
    r = np.sqrt(((x - px) / rx) ** 2 + ((y - py) / ry) ** 2)
    theta = np.arctan2(y - py, x - px)
    streaks = 1 + 0.12 * np.sin(eye.iris_streaks * theta + eye.iris_phase) * np.clip(r, 0, 1)
    limbus = 1 - 0.45 * np.clip((r - 0.72) / 0.28, 0, 1) ** 2
    iris_rgb = np.asarray(eye.iris_rgb, dtype=np.float32)[None, None] * (streaks * limbus * (1 - 0.25 * shadow))[..., None]
    pupil_rgb = np.full(3, 0.05, dtype=np.float32)[None, None]
    if real:
        skin = skin * (1 + camera.texture * _value_noise(noise, x, y, 1.5))[..., None]
        iris_rgb = iris_rgb * (1 + 2 * camera.texture * _value_noise(noise, x, y, 1.0))[..., None]
        sclera = sclera * (1 + 0.5 * camera.texture * _value_noise(noise, x, y, 3.0))[..., None]
    inner = iris_rgb * (1 - pupil[..., None]) + pupil_rgb * pupil[..., None]
    eye_rgb = sclera * (1 - iris[..., None]) + inner * iris[..., None]
    image = skin * (1 - opening[..., None]) + eye_rgb * opening[..., None]
    if not real:
        return np.clip(image * eye.brightness, 0, 1).astype(np.float32)

    # eyelashes (over everything), lighting, glints, colour, blur, noise
    for x0, y0, dx, dy, bend, width, darkness in camera.lashes:
        mx, my = x0 + dx / 2 - bend * dy / 8, y0 + dy / 2 + bend * dx / 8
        dist = np.minimum(_segment_distance(x, y, x0, y0, mx, my), _segment_distance(x, y, mx, my, x0 + dx, y0 + dy))
        cover = _coverage(dist - width / 2, pixel) * darkness
        image = image * (1 - cover[..., None]) + 0.06 * cover[..., None]
    cx, cy = BASE_SIZE[1] / 2, BASE_SIZE[0] / 2
    ramp = ((x - cx) * camera.light_dir[0] + (y - cy) * camera.light_dir[1]) / cx
    lx, ly, lr, ls = camera.lobe
    light = camera.ambient + camera.light_slope * ramp + ls * np.exp(-((x - lx) ** 2 + (y - ly) ** 2) / (2 * lr * lr))
    image = image * np.clip(light, 0.15, 1.8)[..., None]
    for gx, gy, sigma, strength in camera.glints:
        spot = strength * np.exp(-((x - gx) ** 2 + (y - gy) ** 2) / (2 * sigma * sigma))
        image = image + (1 - image) * spot[..., None]
    image = np.clip(image * np.asarray(camera.gains, dtype=np.float32) + camera.offset, 0, 1) ** camera.gamma
    if camera.grayscale:
        image = (image @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None].repeat(3, axis=2)
    image = _gaussian_blur(image.astype(np.float32), camera.blur / pixel)
    image = image + noise.normal(0, camera.noise, image.shape).astype(np.float32)
    return np.clip(image, 0, 1).astype(np.float32)


# --------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------


def eye_rng(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    """The random stream of one sample: 0 = geometry and albedo, 1 = the real camera."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLITS)}")
    return np.random.default_rng([int(seed), SPLITS[split], int(index), int(stream)])


def normalise_centre(centre: torch.Tensor, size) -> torch.Tensor:
    """Pixels (x, y) -> [-1, 1] coordinates (-1 = the left / top image edge)."""
    h, w = size
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=centre.dtype, device=centre.device)
    return centre * scale - 1


def denormalise_centre(coords: torch.Tensor, size) -> torch.Tensor:
    h, w = size
    scale = torch.tensor([w / 2.0, h / 2.0], dtype=coords.dtype, device=coords.device)
    return (coords + 1) * scale


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 in [0, 1] -> (3, H, W) in [-1, 1], quantised to 8 bits like an image file."""
    pixels = np.round(image * 255.0).astype(np.uint8)
    return torch.from_numpy(pixels).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def _mask_tensor(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]


class SyntheticEyes(Dataset):
    """Procedural eyes with ground truth, deterministic per (seed, split, index).

    Items: {"image": (3, H, W) in [-1, 1]} for rendering "synthetic" or "real", or {"synthetic", "real"}
    (both renderings of one geometry) for "both"; plus "mask" (1, H, W) attention (iris + pupil),
    "pupil_mask", "iris_mask", "eye_mask" (1, H, W), "pupil_centre" (2,) pixels (x, y), "gaze" (2,),
    "index". Images are quantised to 8 bits, as if read from files. With cache=True every item is kept
    after its first rendering.
    """

    def __init__(self, length: int = 4000, seed: int = 0, split: str = "train", size=BASE_SIZE,
                 rendering: str = "synthetic", cache: bool = True):
        if rendering not in RENDERINGS:
            raise ValueError(f"rendering must be one of {RENDERINGS}, got {rendering!r}")
        if int(length) < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        eye_rng(seed, split, 0, 0)  # validates the split early
        self.length, self.seed, self.split = int(length), int(seed), split
        self.size = _check_size(size)
        self.rendering = rendering
        self._cache: dict[int, dict] | None = {} if cache else None

    def __len__(self) -> int:
        return self.length

    def _index(self, index: int) -> int:
        index = int(index)
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} eyes")
        return index

    def params(self, index: int) -> tuple[EyeParams, RealParams]:
        index = self._index(index)
        eye = sample_eye(eye_rng(self.seed, self.split, index, 0))
        return eye, sample_real(eye_rng(self.seed, self.split, index, 1), eye)

    def sample(self, index: int) -> EyeSample:
        """The rendered numpy sample (both renderings are drawn from the same geometry)."""
        eye, camera = self.params(index)
        return render_eye(eye, self.size, self.rendering, camera)

    def __getitem__(self, index: int) -> dict:
        index = self._index(index)
        if self._cache is not None and index in self._cache:
            return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in self._cache[index].items()}
        s = self.sample(index)
        item = {"mask": _mask_tensor(s.mask), "pupil_mask": _mask_tensor(s.pupil_mask),
                "iris_mask": _mask_tensor(s.iris_mask), "eye_mask": _mask_tensor(s.eye_mask),
                "pupil_centre": torch.from_numpy(s.pupil_centre), "gaze": torch.from_numpy(s.gaze), "index": index}
        if self.rendering == "both":
            item["synthetic"], item["real"] = _image_tensor(s.synthetic), _image_tensor(s.real)
        else:
            item["image"] = _image_tensor(s.synthetic if self.rendering == "synthetic" else s.real)
        if self._cache is not None:
            self._cache[index] = item
            return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in item.items()}
        return item


# --------------------------------------------------------------------------
# Preview
# --------------------------------------------------------------------------


def preview_grid(dataset: SyntheticEyes, count: int = 8, gap: int = 2) -> np.ndarray:
    """uint8 grid: rows synthetic / real / attention mask (pupil centre marked), one column per sample."""
    h, w = dataset.size
    both = SyntheticEyes(dataset.length, dataset.seed, dataset.split, dataset.size, "both", cache=False)
    grid = np.full((3 * (h + gap) - gap, count * (w + gap) - gap, 3), 255, dtype=np.uint8)
    for i in range(count):
        s = both.sample(i)
        mask = np.repeat(s.mask[..., None], 3, axis=2)
        cx, cy = np.floor(s.pupil_centre).astype(int)
        mask[cy, cx] = (1.0, 0.0, 0.0)
        for row, tile in enumerate((s.synthetic, s.real, mask)):
            top, left = row * (h + gap), i * (w + gap)
            grid[top:top + h, left:left + w] = np.round(np.clip(tile, 0, 1) * 255).astype(np.uint8)
    return grid


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    parser = argparse.ArgumentParser(prog="python -m lmt_train.data.eyes", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="eyes_preview.png", help="grid PNG to write")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="train", choices=tuple(SPLITS))
    parser.add_argument("--size", default="36x60", help="HxW, 5:3 (default 36x60)")
    parser.add_argument("--scale", type=int, default=4, help="nearest-neighbour zoom of the grid")
    args = parser.parse_args(argv)
    h, w = (int(v) for v in args.size.lower().split("x"))
    grid = preview_grid(SyntheticEyes(args.count, args.seed, args.split, (h, w), "both", cache=False), args.count)
    image = Image.fromarray(grid).resize((grid.shape[1] * args.scale, grid.shape[0] * args.scale), Image.NEAREST)
    image.save(args.output)
    print(f"wrote {args.output}: rows synthetic / real / attention mask (red: pupil centre)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

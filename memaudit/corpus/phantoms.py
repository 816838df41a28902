"""Phantom chest radiographs: smooth synthetic anatomy with finding-dependent opacities.

:func:`render_phantoms` draws one small grayscale image per severity row (see
:mod:`memaudit.corpus.findings`), so a study's image shows what its report says: darker lung
fields, a brighter heart (wider with cardiomegaly), fluid levels, blobs, apical darkening,
bands and haze for the lung findings, thin bright lines for tubes and devices, and a texture of
its own in every image (as every patient's anatomy is their own). Images use the
radiological convention: the patient's right is on the image's left. Every image gets its own
geometry jitter, smooth and fine noise and contrast, all drawn from one generator in a fixed
order, so the same severity rows and seed give the same pixels, and two studies with the same
findings never share them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from memaudit.corpus.findings import FINDING_COLUMN, FINDING_NAMES

# Fluid level of an effusion, as a fraction of the lung's height, by severity (0 = none).
_EFFUSION_LEVEL = np.array([0.0, 0.3, 0.5, 0.75], dtype=np.float32)
# Knots per side of the coarse grid the smooth noise is drawn on.
_NOISE_KNOTS = 5
# Knots per side and amplitude of each image's own texture: with it, a fresh phantom's nearest
# training phantom correlates ~0.92 (pixels, median) instead of ~0.97, so a copy stands out.
_TEXTURE_KNOTS = 9
_TEXTURE_AMPLITUDE = 0.08

# column(name) -> [b, 1, 1] severities of one finding; param(scale) -> [b, 1, 1] jitter draws
Column = Callable[[str], np.ndarray]
Param = Callable[[float], np.ndarray]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def _segment_distance(x, y, x0, y0, x1, y1):
    """Distance from points (x, y) to the segment (x0, y0)-(x1, y1), broadcast over images."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy + 1e-9), 0.0, 1.0)
    return np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))


def _polyline(x, y, points, width: float):
    """Soft mask of a thin line through ``points`` (each a pair of [n,1,1] or scalar values)."""
    dist = None
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
        d = _segment_distance(x, y, x0, y0, x1, y1)
        dist = d if dist is None else np.minimum(dist, d)
    return np.exp(-((dist / width) ** 2))


def _interp_matrix(size: int, knots: int) -> np.ndarray:
    """Linear interpolation weights [size, knots] from a coarse grid to the pixel grid."""
    pos = np.linspace(0, knots - 1, size)
    lo = np.clip(np.floor(pos).astype(int), 0, knots - 2)
    frac = pos - lo
    m = np.zeros((size, knots))
    m[np.arange(size), lo] = 1 - frac
    m[np.arange(size), lo + 1] = frac
    return m


def render_phantoms(
    severity: np.ndarray, rng: np.random.Generator, image_size: int, chunk: int = 2048
) -> np.ndarray:
    """Render chest phantoms, one per severity row, as uint8 [n, image_size, image_size].

    Content follows the findings: two darker lung fields, a bright mediastinum and heart (wider
    with cardiomegaly), bright lower lung zones for effusions, a bright blob for consolidation,
    a darker sharp-edged apical region for pneumothorax, a basal band for atelectasis, a
    perihilar haze for edema and thin bright lines for tubes, lines and pacemaker leads.
    Every image gets its own position/size jitter, smooth noise and contrast, so two studies
    with the same findings never share pixels. Image left = patient's right. The draws are
    taken per ``chunk`` of rows, so the pixels depend on ``chunk`` as well as on the seed.
    """
    severity = np.asarray(severity)
    if severity.ndim != 2 or severity.shape[1] != len(FINDING_NAMES):
        raise ValueError(
            f"severity must have shape [n, {len(FINDING_NAMES)}], got {severity.shape}"
        )
    n, s = severity.shape[0], image_size
    out = np.empty((n, s, s), dtype=np.uint8)
    coords = ((np.arange(s) + 0.5) / s * 2.0 - 1.0).astype(np.float32)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    interp = _interp_matrix(s, _NOISE_KNOTS).astype(np.float32)
    for start in range(0, n, chunk):
        sev = severity[start : start + chunk].astype(np.float32)
        out[start : start + len(sev)] = _render_chunk(sev, rng, xx[None], yy[None], interp)
    return out


def _render_chunk(
    sev: np.ndarray, rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, interp: np.ndarray
) -> np.ndarray:
    """uint8 images of one chunk of severity rows. The phases draw from ``rng`` in order."""
    b = sev.shape[0]

    def col(name: str) -> np.ndarray:
        return sev[:, FINDING_COLUMN[name]][:, None, None]

    def param(scale: float) -> np.ndarray:
        return scale * rng.standard_normal(b, dtype=np.float32)[:, None, None]

    # 1. Geometry: per-image zoom, shift and depth of inspiration.
    zoom = 1.0 + np.clip(param(0.06), -0.15, 0.15)
    x = (xx - param(0.05)) / zoom
    y = (yy - param(0.04)) / zoom
    inspiration = 1.0 + np.clip(param(0.05), -0.12, 0.12)
    # 2. Body and lungs with their one-sided findings, 3. the bilateral lung findings.
    img, lungs = _lung_fields(x, y, inspiration, col, param)
    img = _diffuse_findings(img, x, y, inspiration, lungs, col)
    # 4. Mediastinum and heart, 5. tubes, lines and devices.
    img = _heart(img, x, y, col, param)
    img = _devices(img, x, y, col, param)
    # 6. Ribs, smooth noise, fine noise (contrast last, after 7).
    img = img + 0.03 * np.sin(y * 22.0 + param(1.0)) * lungs
    coarse = rng.standard_normal((b, _NOISE_KNOTS, _NOISE_KNOTS), dtype=np.float32)
    img = img + 0.04 * np.einsum("sa,nab,tb->nst", interp, coarse, interp)
    img = img + 0.015 * rng.standard_normal(img.shape, dtype=np.float32)
    # 7. The patient's own texture (vessels, soft tissue): a mid-frequency field no other
    # image shares, so a fresh phantom is not a near-twin of a training one and a copy is.
    knots = _interp_matrix(img.shape[-1], _TEXTURE_KNOTS).astype(np.float32)
    texture = rng.standard_normal((b, _TEXTURE_KNOTS, _TEXTURE_KNOTS), dtype=np.float32)
    img = img + _TEXTURE_AMPLITUDE * np.einsum("sa,nab,tb->nst", knots, texture, knots)
    contrast = 1.0 + np.clip(param(0.1), -0.25, 0.25)
    brightness = np.clip(param(0.04), -0.1, 0.1)
    gamma = np.exp(np.clip(param(0.1), -0.25, 0.25))
    img = np.clip((img - 0.45) * contrast + 0.45 + brightness, 0.0, 1.0) ** gamma
    return np.round(img * 255.0).astype(np.uint8)


def _lung_fields(
    x: np.ndarray, y: np.ndarray, inspiration: np.ndarray, col: Column, param: Param
) -> tuple[np.ndarray, np.ndarray]:
    """(image with body, lungs, effusions, consolidations and pneumothoraces; both lung masks).

    The patient's right lung (image left) comes first; each side draws its consolidation's
    position whether or not the side has one, so findings never shift later draws.
    """
    body = _sigmoid((1.0 - ((x / 0.92) ** 2 + ((y - 0.1) / 1.15) ** 2)) / 0.08)
    img = 0.08 + 0.42 * body
    masks = []
    for side, cx in (("right", -0.4), ("left", 0.4)):
        cy, rx, ry = -0.08, 0.27, 0.56 * inspiration
        r2 = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
        lung = _sigmoid((1.0 - r2) / 0.12)
        masks.append(lung)
        img = img - 0.3 * lung
        # Effusion: fluid fills the lung base up to a level with a lateral meniscus.
        e = col(f"effusion_{side}")
        level = cy + ry - ry * _EFFUSION_LEVEL[e.astype(int)]
        meniscus = level - 0.25 * np.abs(x - cx) / rx
        fluid = lung * _sigmoid((y - meniscus) / 0.04) * (e > 0)
        img = img + 0.3 * fluid
        # Consolidation: a bright blob somewhere inside the lung.
        c = col(f"consolidation_{side}")
        bx = cx + param(0.08)
        by = cy + 0.25 * np.tanh(param(1.0))
        sigma = 0.1 + 0.04 * c
        blob = np.exp(-(((x - bx) ** 2 + (y - by) ** 2) / (2 * sigma**2)))
        img = img + 0.28 * blob * lung * (c > 0)
        # Pneumothorax: a sharp, very dark upper-lateral region without lung markings.
        p = col(f"pneumothorax_{side}")
        lateral = (x - cx) * (1.0 if side == "left" else -1.0) / rx - (y - cy) / ry
        edge = 1.0 - 0.35 * p
        ptx = lung * _sigmoid((lateral - edge) / 0.03) * (p > 0)
        img = img - 0.2 * ptx
    return img, masks[0] + masks[1]


def _diffuse_findings(
    img: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    inspiration: np.ndarray,
    lungs: np.ndarray,
    col: Column,
) -> np.ndarray:
    """Atelectasis (a basal band) and edema (a perihilar haze) over both lungs."""
    a = col("atelectasis")
    band_y = -0.08 + 0.38 * inspiration + 0.08 * x
    band = np.exp(-(((y - band_y) / 0.06) ** 2)) * lungs
    img = img + 0.1 * a * band
    ed = col("edema")
    haze = np.exp(-(((np.abs(x) - 0.22) ** 2) / 0.08 + (y**2) / 0.12)) * lungs
    return img + 0.09 * ed * haze


def _heart(img: np.ndarray, x: np.ndarray, y: np.ndarray, col: Column, param: Param):
    """The mediastinum, then the heart, wider and taller with cardiomegaly."""
    med = _sigmoid((0.11 - np.abs(x)) / 0.03) * _sigmoid((0.35 - y) / 0.05)
    med = med * _sigmoid((y + 0.95) / 0.05)
    img = img + (0.72 - img) * med
    cardio = col("cardiomegaly")
    hrx = 0.24 * (1.0 + 0.2 * cardio) * (1.0 + np.clip(param(0.04), -0.1, 0.1))
    hry = 0.2 * (1.0 + 0.07 * cardio)
    heart = _sigmoid((1.0 - ((x - 0.07) / hrx) ** 2 - ((y - 0.33) / hry) ** 2) / 0.15)
    return img + (0.8 - img) * heart


def _devices(img: np.ndarray, x: np.ndarray, y: np.ndarray, col: Column, param: Param):
    """Thin bright lines: ET tube (its tip drawn for every image), NG tube, line, pacemaker."""
    lines = np.zeros_like(img)
    et, ng, cl, pm = (col(k) for k in ("et_tube", "ng_tube", "central_line", "pacemaker"))
    tip = -0.35 + param(0.05)
    x_et = param(0.02)
    # Masks are skipped for chunks without the device: the cost is in the distance fields.
    if et.any():
        lines = np.maximum(lines, et * _polyline(x, y, [(x_et, -1.1), (x_et, tip)], 0.04))
    if ng.any():
        path = [(-0.03, -1.1), (-0.03, 0.55), (0.3, 0.8)]
        lines = np.maximum(lines, ng * _polyline(x, y, path, 0.035))
    if cl.any():
        path = [(-0.45, -1.0), (-0.14, -0.45), (-0.08, -0.05)]
        lines = np.maximum(lines, cl * _polyline(x, y, path, 0.035))
    if pm.any():
        lead = _polyline(x, y, [(0.55, -0.75), (0.12, -0.45), (0.0, 0.35)], 0.03)
        box = _sigmoid((0.09 - np.abs(x - 0.55)) / 0.02)
        box = box * _sigmoid((0.06 - np.abs(y + 0.75)) / 0.02)
        lines = np.maximum(lines, pm * np.maximum(lead, box))
    return img + (0.97 - img) * 0.8 * lines

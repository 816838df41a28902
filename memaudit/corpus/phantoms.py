"""Phantom chest radiographs: smooth synthetic anatomy with finding-dependent opacities."""

from __future__ import annotations

import numpy as np

from memaudit.corpus.vocabulary import _COL, _EFFUSION_LEVEL, FINDING_NAMES


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
    with the same findings never share pixels. Image left = patient's right.
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
    yy, xx = yy[None], xx[None]
    knots = 5
    m = _interp_matrix(s, knots).astype(np.float32)
    for start in range(0, n, chunk):
        sev = severity[start : start + chunk].astype(np.float32)
        b = sev.shape[0]

        def col(name: str, sev=sev) -> np.ndarray:
            return sev[:, _COL[name]][:, None, None]

        def param(scale: float, b=b) -> np.ndarray:
            return scale * rng.standard_normal(b, dtype=np.float32)[:, None, None]

        zoom = 1.0 + np.clip(param(0.06), -0.15, 0.15)
        x = (xx - param(0.05)) / zoom
        y = (yy - param(0.04)) / zoom
        inspiration = 1.0 + np.clip(param(0.05), -0.12, 0.12)

        body = _sigmoid((1.0 - ((x / 0.92) ** 2 + ((y - 0.1) / 1.15) ** 2)) / 0.08)
        img = 0.08 + 0.42 * body
        lungs = {}
        for side, cx in (("right", -0.4), ("left", 0.4)):
            cy, rx, ry = -0.08, 0.27, 0.56 * inspiration
            r2 = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
            lung = _sigmoid((1.0 - r2) / 0.12)
            lungs[side] = (lung, cx, cy, rx, ry)
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
        both = lungs["right"][0] + lungs["left"][0]
        a = col("atelectasis")
        band_y = -0.08 + 0.38 * inspiration + 0.08 * x
        band = np.exp(-(((y - band_y) / 0.06) ** 2)) * both
        img = img + 0.1 * a * band
        ed = col("edema")
        haze = np.exp(-(((np.abs(x) - 0.22) ** 2) / 0.08 + (y**2) / 0.12)) * both
        img = img + 0.09 * ed * haze
        # Mediastinum and heart.
        med = _sigmoid((0.11 - np.abs(x)) / 0.03) * _sigmoid((0.35 - y) / 0.05)
        med = med * _sigmoid((y + 0.95) / 0.05)
        img = img + (0.72 - img) * med
        cardio = col("cardiomegaly")
        hrx = 0.24 * (1.0 + 0.2 * cardio) * (1.0 + np.clip(param(0.04), -0.1, 0.1))
        hry = 0.2 * (1.0 + 0.07 * cardio)
        heart = _sigmoid((1.0 - ((x - 0.07) / hrx) ** 2 - ((y - 0.33) / hry) ** 2) / 0.15)
        img = img + (0.8 - img) * heart
        # Tubes, lines and devices.
        lines = np.zeros_like(img)
        et, ng, cl, pm = (col(k) for k in ("et_tube", "ng_tube", "central_line", "pacemaker"))
        tip = -0.35 + param(0.05)
        x_et = param(0.02)
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
        img = img + (0.97 - img) * 0.8 * lines
        # Ribs, smooth noise, fine noise and contrast.
        img = img + 0.03 * np.sin(y * 22.0 + param(1.0)) * both
        coarse = rng.standard_normal((b, knots, knots), dtype=np.float32)
        img = img + 0.04 * np.einsum("sa,nab,tb->nst", m, coarse, m)
        img = img + 0.015 * rng.standard_normal(img.shape, dtype=np.float32)
        contrast = 1.0 + np.clip(param(0.1), -0.25, 0.25)
        brightness = np.clip(param(0.04), -0.1, 0.1)
        gamma = np.exp(np.clip(param(0.1), -0.25, 0.25))
        img = np.clip((img - 0.45) * contrast + 0.45 + brightness, 0.0, 1.0) ** gamma
        out[start : start + b] = np.round(img * 255.0).astype(np.uint8)
    return out

"""The synthetic axial head phantom the demo dataset is made of (numpy and scipy.fft only).

A dark background, a bright scalp and skull ring, folded brain tissue with grey/white-
matter contrast, dark butterfly ventricles, a bias field and Rician-like noise; with
``lesion=True`` one lesion (irregular, sometimes ring-enhancing, sometimes subtle) and its
mass effect. Everything about the anatomy is drawn from the same distribution in both
classes, so the lesion is the only thing that separates them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import scipy.fft


def _smoothstep(lo: float | np.ndarray, hi: float | np.ndarray, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _noise_fields(rng: np.random.Generator, size: int, sigmas: tuple[float, ...]) -> np.ndarray:
    """Independent smooth Gaussian noise fields, one per sigma (a fraction of the image).

    Each field is white noise low-pass filtered in the Fourier domain, then scaled to zero
    mean and unit standard deviation.
    """
    white = rng.standard_normal((len(sigmas), size, size), dtype=np.float32)
    spectrum = scipy.fft.rfft2(white)  # keeps float32, several times faster than numpy's
    spectrum *= _gaussian_kernels(size, sigmas)
    fields = scipy.fft.irfft2(spectrum, s=(size, size)).astype(np.float32, copy=False)
    fields -= fields.mean(axis=(1, 2), keepdims=True)
    fields /= fields.std(axis=(1, 2), keepdims=True) + 1e-12
    return fields


@functools.lru_cache(maxsize=8)
def _gaussian_kernels(size: int, sigmas: tuple[float, ...]) -> np.ndarray:
    """Fourier-domain Gaussian low-pass filters matching ``scipy.fft.rfft2`` output."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f2 = fx * fx + fy * fy
    pixels = np.asarray(sigmas)[:, None, None] * size
    kernels = np.exp(-2.0 * math.pi**2 * pixels**2 * f2).astype(np.float32)
    kernels.flags.writeable = False
    return kernels


def _sample(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear sample of ``field`` (one or a stack) at image coordinates ``x``, ``y``."""
    if field.ndim == 3:
        return np.stack([_sample(f, x, y) for f in field])
    size = field.shape[0]
    px = np.clip((x + 1.0) * 0.5 * size - 0.5, 0.0, size - 1.001)
    py = np.clip((y + 1.0) * 0.5 * size - 0.5, 0.0, size - 1.001)
    fx0, fy0 = np.floor(px), np.floor(py)
    tx, ty = px - fx0, py - fy0
    x0, y0 = fx0.astype(np.intp), fy0.astype(np.intp)
    flat = field.ravel()
    i00 = y0 * size + x0
    top = flat.take(i00) * (1 - tx) + flat.take(i00 + 1) * tx
    bottom = flat.take(i00 + size) * (1 - tx) + flat.take(i00 + size + 1) * tx
    return top * (1 - ty) + bottom * ty


def _cos_k(c1: np.ndarray, s1: np.ndarray, k: int, phase: float) -> np.ndarray:
    """cos(k * angle + phase), given cos(angle) and sin(angle); no arctan2 needed."""
    ck, sk = c1, s1
    for _ in range(k - 1):
        ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
    return ck * math.cos(phase) - sk * math.sin(phase)


def _soft_ellipse(dx, dy, ax, ay, edge):
    """1 inside the ellipse with semi-axes ``ax``, ``ay``, 0 outside, soft over ``edge``."""
    rho = np.sqrt((dx / ax) ** 2 + (dy / ay) ** 2)
    return 1.0 - _smoothstep(1.0 - edge, 1.0 + edge, rho)


def render_slice(
    rng: np.random.Generator, size: int, lesion: bool, conspicuous: "bool | LesionStyle" = False
) -> np.ndarray:
    """One synthetic axial slice as a ``size`` x ``size`` uint8 array.

    Every random draw comes from ``rng``, in a fixed order, so a seeded generator gives
    the same image every time. ``lesion`` adds a tumour; the anatomy is drawn the same
    way either way. ``conspicuous`` draws the tumour in :data:`CONSPICUOUS` style, or in
    the :class:`LesionStyle` given (larger,
    brighter, never dark by default): the same random draws, so the same anatomy and position.
    """
    u = rng.uniform
    # The tumour has its own stream, so the same rng gives the same anatomy with or
    # without it (the tests compare such pairs).
    lesion_rng = np.random.default_rng(int(rng.integers(2**63)))
    grid = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    x, y = np.meshgrid(grid, grid)
    px = 2.0 / size  # one pixel, in image coordinates

    # Noise fields: sulci, tissue texture, white-matter boundary, bias field, ring texture,
    # lesion texture, lesion edge.
    (f_sulci, f_tissue, f_wm, f_bias, f_ring, f_les_tex, f_les_edge) = _noise_fields(
        rng, size, (0.008, 0.03, 0.07, 0.3, 0.04, 0.025, 0.05)
    )

    # --- head geometry -----------------------------------------------------------------
    a = u(0.60, 0.80)  # half-width of the head
    b = min(a * u(1.06, 1.32), 0.96)  # half-height (axial heads are longer than wide)
    cx, cy = u(-0.09, 0.09), u(-0.06, 0.06)
    b = min(b, 0.9 - abs(cy))  # keep the whole head in the frame
    theta = u(-0.38, 0.38)
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    hx = (cos_t * (x - cx) + sin_t * (y - cy)) / a
    hy = (-sin_t * (x - cx) + cos_t * (y - cy)) / b
    r0 = np.maximum(np.hypot(hx, hy), 1e-6)
    c1, s1 = hx / r0, hy / r0  # cos and sin of the polar angle
    outline = (
        1.0
        + u(0.0, 0.035) * _cos_k(c1, s1, 2, u(0, 2 * math.pi))
        + u(0.0, 0.02) * _cos_k(c1, s1, 3, u(0, 2 * math.pi))
        + u(0.0, 0.05) * s1  # the back of an axial head is a little wider than the front
    )
    r = r0 / outline
    edge = 1.2 * px / a  # one pixel and a bit, in units of r

    ring = u(0.05, 0.12) * (1.0 + u(0.0, 0.45) * _cos_k(c1, s1, 1, u(0, 2 * math.pi)))
    gap = u(0.015, 0.035)
    brain_edge = 1.0 - ring - gap
    head = 1.0 - _smoothstep(1.0 - edge, 1.0 + edge, r)
    brain = 1.0 - _smoothstep(brain_edge - edge, brain_edge + edge, r)
    inner_ring = 1.0 - _smoothstep(brain_edge + gap - edge, brain_edge + gap + edge, r)
    ring_mask = head - inner_ring
    gap_mask = inner_ring - brain

    # Scalp and skull: a bright band with a darker stripe (cortical bone) inside it.
    scalp_level = u(0.72, 0.92)
    stripe_pos = u(0.3, 0.75)
    stripe_depth = u(0.0, 0.75)
    t_ring = np.clip((1.0 - r) / ring, 0.0, 1.0)  # 0 at the scalp surface, 1 at the bone
    stripe = np.exp(-(((t_ring - stripe_pos) / u(0.10, 0.2)) ** 2))
    ring_img = scalp_level * (1.0 - stripe_depth * stripe) * (1.0 + 0.15 * f_ring)

    # --- brain coordinates (with optional mass effect) ----------------------------------
    scale = float(brain_edge.mean())
    bx = hx / scale
    by = hy / scale
    depth = r / brain_edge  # 0 at the centre, 1 at the brain's outline

    lesion_params = _draw_lesion(lesion_rng) if lesion else None
    if lesion_params is not None and conspicuous:
        lesion_params = restyle(lesion_params, CONSPICUOUS if conspicuous is True else conspicuous)
    wx, wy = bx, by
    if lesion_params is not None:
        lx, ly, lr = lesion_params["x"], lesion_params["y"], lesion_params["radius"]
        near = np.exp(-((bx - lx) ** 2 + (by - ly) ** 2) / (2 * (1.6 * lr) ** 2))
        push = lesion_params["mass_effect"] * near  # structures move away from the mass
        wx = lx + (bx - lx) * (1.0 - push)
        wy = ly + (by - ly) * (1.0 - push)
    # Image coordinates of the warped brain point, to sample the noise fields there.
    sx_img = cx + (cos_t * wx * a - sin_t * wy * b) * scale
    sy_img = cy + (sin_t * wx * a + cos_t * wy * b) * scale

    # --- tissue -------------------------------------------------------------------------
    gm = u(0.3, 0.42)
    wm = gm + u(0.1, 0.22)
    csf = u(0.04, 0.12)
    deep = gm + u(0.02, 0.08)

    # Sulci are the zero-crossings of a noise field sampled through a polar map that
    # squeezes the radial direction, so they run mostly inwards from the surface. Grey
    # matter lines each sulcus and the brain's surface; white matter fills the core and
    # the gyri between sulci.
    wd = np.hypot(wx, wy)
    polar = (u(0.28, 0.34) + u(0.35, 0.5) * wd) / np.maximum(wd, 1e-6)
    g = _sample(f_sulci, polar * wx, polar * wy)
    wm_edge = u(0.58, 0.7) + 0.06 * _sample(f_wm, sx_img, sy_img)
    sulcus_width = u(0.14, 0.26)
    folded = _smoothstep(wm_edge - 0.1, wm_edge + 0.1, wd)
    sulcus_width = sulcus_width * (0.5 + _smoothstep(0.75, 1.0, depth))  # wider at the surface
    sulci = _smoothstep(wm_edge, wm_edge + 0.18, wd) * np.exp(-((g / sulcus_width) ** 2))
    gm_frac = folded * np.maximum(
        np.exp(-((g / (u(2.6, 3.6) * sulcus_width)) ** 2)), _smoothstep(0.86, 0.96, depth)
    )
    tissue = wm * (1.0 - gm_frac) + gm * gm_frac
    tissue *= 1.0 + u(0.02, 0.06) * _sample(f_tissue, sx_img, sy_img)

    # Deep grey nuclei (basal ganglia, thalami): faint darker blobs beside the ventricles.
    nuclei = np.zeros_like(x)
    for side in (-1.0, 1.0):
        ganglia = _soft_ellipse(
            wx - side * u(0.24, 0.32), wy - u(-0.08, 0.02), u(0.08, 0.12), u(0.13, 0.2), 0.5
        )
        thalamus = _soft_ellipse(
            wx - side * u(0.08, 0.13), wy - u(0.12, 0.22), u(0.06, 0.09), u(0.08, 0.12), 0.5
        )
        nuclei = np.maximum.reduce([nuclei, ganglia, thalamus])
    nuclei *= u(0.3, 0.6)
    tissue = tissue * (1.0 - nuclei) + deep * nuclei

    # CSF spaces: ventricles (butterfly), third ventricle, interhemispheric fissure, sulci.
    vscale = u(0.7, 1.45)
    vlen = u(0.22, 0.32) * (0.8 + 0.2 * vscale)
    vwidth = u(0.04, 0.075) * vscale
    vy0 = u(-0.12, 0.0)
    vsplay = u(-0.1, 0.3)
    vbend = u(0.8, 2.2)
    ventricles = np.zeros_like(x)
    for side in (-1.0, 1.0):
        dx = wx - side * u(0.07, 0.12) * (0.85 + 0.15 * vscale)
        dy = wy - vy0 - u(-0.03, 0.03)
        cs, sn = math.cos(vsplay), math.sin(vsplay)
        lx_ = cs * dx - side * sn * dy  # frontal horns close together, bodies splay back
        ly_ = side * sn * dx + cs * dy
        lx_ = lx_ - side * vbend * (ly_**2)  # both ends curve away from the midline
        horn = _soft_ellipse(lx_, ly_, vwidth * u(0.85, 1.15), vlen * u(0.9, 1.1), 0.25)
        ventricles = np.maximum(ventricles, horn)
    third = _soft_ellipse(wx, wy - vy0 - u(0.2, 0.28), 0.018 * vscale, u(0.06, 0.1), 0.4)
    ventricles = np.maximum(ventricles, third)
    wobble = 0.02 * np.sin(wy * u(2.0, 4.0) + u(0, 2 * math.pi))
    fissure = np.exp(-(((wx + wobble) / u(0.012, 0.025)) ** 2))
    fissure *= _smoothstep(0.5, 0.7, np.abs(wy)) * u(0.5, 0.9)  # front and back only
    csf_frac = np.clip(np.maximum.reduce([ventricles, fissure, 0.85 * sulci]), 0.0, 1.0)
    # A thin CSF rim just inside the brain's outline.
    csf_frac = np.maximum(csf_frac, 0.6 * _smoothstep(0.93, 1.0, depth))
    tissue = tissue * (1.0 - csf_frac) + csf * csf_frac

    # Small bright dots (vessels, calcifications) in both classes, so "any bright spot" is
    # not the answer.
    for _ in range(rng.integers(0, 4)):
        ang, rad = u(0, 2 * math.pi), math.sqrt(u(0.0, 0.7))
        dx, dy = bx - rad * math.cos(ang), by - rad * math.sin(ang)
        dot = _soft_ellipse(dx, dy, u(0.012, 0.025), u(0.012, 0.025), 0.5)
        tissue += u(0.08, 0.25) * dot

    if lesion_params is not None:
        base = gm + lesion_params["base_mix"] * (wm - gm)
        tissue = _add_lesion(
            tissue, base, lesion_params, bx, by, f_les_tex, f_les_edge, lesion_rng
        )

    # --- compose, bias field, noise, intensity ------------------------------------------
    img = ring_img * ring_mask + csf * 0.6 * gap_mask + tissue * brain
    bias = np.exp(u(0.05, 0.18) * f_bias + u(-0.12, 0.12) * x + u(-0.12, 0.12) * y)
    img = img * bias
    sigma = u(0.005, 0.025)
    n1 = rng.standard_normal(img.shape, dtype=np.float32)
    n2 = rng.standard_normal(img.shape, dtype=np.float32)
    img = np.sqrt((img + sigma * n1) ** 2 + (sigma * n2) ** 2)  # Rician, like magnitude MRI
    img = u(0.8, 1.08) * np.clip(img, 0.0, None) ** u(0.8, 1.25)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _draw_lesion(rng: np.random.Generator) -> dict:
    """Parameters of one tumour, in brain coordinates."""
    u = rng.uniform
    # Size: mostly moderate, some small, a few large.
    radius = min(max(math.exp(rng.normal(math.log(0.2), 0.5)), 0.06), 0.45)
    # Position: anywhere in the brain, kept inside it.
    ang = u(0, 2 * math.pi)
    rad = math.sqrt(u(0.0, 1.0)) * max(0.1, 0.82 - radius)
    kind = rng.choice(["solid", "ring", "dark"], p=[0.55, 0.3, 0.15])
    # Conspicuity: about one in six is subtle (contrast under 0.1).
    contrast = 0.06 + 0.45 * u(0.0, 1.0) ** 1.3
    return {
        "x": rad * math.cos(ang),
        "y": rad * math.sin(ang),
        "radius": radius,
        "kind": str(kind),
        "contrast": contrast,
        "harmonics": [(u(0.0, 0.3) / k**1.2, u(0, 2 * math.pi)) for k in range(2, 7)],
        "edge_noise": u(0.1, 0.35),
        "edema": u(0.0, 0.12) if u() < 0.55 else 0.0,
        "edema_extent": u(1.3, 2.0),
        "mass_effect": u(0.0, 0.35) * min(1.0, radius / 0.2),
        "base_mix": u(0.3, 0.7),  # tumour tissue level, between grey and white matter
    }


@dataclass(frozen=True)
class LesionStyle:
    """How visible a tumour is: its smallest radius (brain coordinates), the range its
    contrast is remapped into, and its kind (``solid``, ``ring``, ``dark``; None keeps the
    drawn kind)."""

    min_radius: float
    contrast_low: float
    contrast_high: float
    kind: str | None = "solid"


#: The demo dataset's tumours: solid masses of radius at least 0.2 and contrast 0.6 to 1.0,
#: so that a small randomly initialised network learns the task from 100 images per class
#: (the README's first command); the copy-detection benchmark keeps the subtler draws of
#: :func:`_draw_lesion`.
CONSPICUOUS = LesionStyle(0.2, 0.6, 1.0, "solid")


def restyle(p: dict, style: LesionStyle) -> dict:
    """The same tumour drawn in ``style``: radius at least ``style.min_radius``, contrast
    remapped monotonically from 0.06..0.51 into the style's range (the draws keep their
    order), kind replaced when the style names one, moved inward when it no longer fits."""
    q = dict(p)
    q["radius"] = max(p["radius"], style.min_radius)
    q["contrast"] = style.contrast_low + (style.contrast_high - style.contrast_low) * (p["contrast"] - 0.06) / 0.45
    if style.kind is not None:
        q["kind"] = style.kind
    # A larger mass must still fit inside the brain.
    reach = math.hypot(p["x"], p["y"])
    limit = max(0.1, 0.82 - q["radius"])
    if reach > limit:
        q["x"], q["y"] = p["x"] * limit / reach, p["y"] * limit / reach
    return q


def _add_lesion(tissue, base, p, bx, by, f_tex, f_edge, rng):
    """Paint the tumour described by ``p`` into ``tissue`` (brain coordinates ``bx``, ``by``).

    The mass replaces whatever was there (sulci, ventricles) with tumour tissue whose
    level is ``base`` (the local parenchyma) plus or minus the lesion's contrast.
    """
    u = rng.uniform
    dx, dy = bx - p["x"], by - p["y"]
    dist = np.maximum(np.hypot(dx, dy), 1e-6)
    c1, s1 = dx / dist, dy / dist
    shape = np.ones_like(dist)
    for k, (amp, phase) in enumerate(p["harmonics"], start=2):
        shape += amp * _cos_k(c1, s1, k, phase)
    rho = dist / (p["radius"] * np.maximum(shape, 0.4))
    rho = rho * (1.0 + 0.5 * p["edge_noise"] * f_edge)
    sharp = u(0.05, 0.2)
    mass = 1.0 - _smoothstep(1.0 - sharp, 1.0 + sharp, rho)
    texture = 1.0 + u(0.1, 0.35) * f_tex

    # Edema: a faint, wider, irregular halo (darker on this T1-like contrast).
    if p["edema"] > 0:
        extent = p["edema_extent"]
        halo = 1.0 - _smoothstep(0.8 * extent, 1.1 * extent, rho * (1.0 + 0.15 * f_edge))
        tissue = tissue * (1.0 - p["edema"] * halo * (1.0 - mass))

    c = p["contrast"]
    kind = p["kind"]
    if kind == "solid":
        level = base + c * texture
    elif kind == "ring":  # enhancing wall around a darker necrotic core
        wall = u(0.2, 0.4)
        rim = np.exp(-(((rho - (1.0 - wall / 2)) / (wall / 2)) ** 2))
        core = 1.0 - _smoothstep(0.0, 1.0 - wall, rho)
        level = base + (c + 0.06) * rim * texture - u(0.2, 0.6) * c * core * texture
    else:  # a darker (hypointense) mass, sometimes with a thin brighter rim
        rim = np.exp(-(((rho - 0.95) / 0.1) ** 2)) * u(0.0, 0.6)
        level = base - 0.5 * c * texture + c * rim
    return tissue * (1.0 - mass) + level * mass

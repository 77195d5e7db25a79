"""Procedural rooms with surface normals: S²-GAN's data without a download.

Each scene is a room box (floor, four walls, ceiling) seen from a camera standing inside it,
with up to three boxes standing on the floor. A small vectorised ray caster (numpy, one pass
over all pixels of a chunk of scenes at once) gives, per pixel,

- the unit surface normal in **camera coordinates**: x to the right of the image, y up, z
  towards the viewer (out of the screen; the camera looks along -z). A visible surface faces
  the camera, so n . d < 0 for the viewing ray d of its pixel (:func:`ray_directions`).
  Saved as uint8 with the S²-GAN encoding p = (n + 1) * 127.5 (decoded n = p / 127.5 - 1),
  channels (x, y, z) -> (R, G, B): the floor is green-ish (y up), a wall on the left of the
  image (normal to the right) red-ish, one facing the camera blue-ish. The exact axis
  convention of the released NYU jpgs is not verified: a model trained here learns
  this convention, not NYU's.
- an RGB image shaded from those normals: per-surface colours (a floor palette with a plank
  texture, a wall palette, an off-white ceiling, a random colour per box), a directional light,
  a weaker light from the camera and a soft fall-off with distance. No shadows.

Normals are stored at the image resolution; S²-GAN downsamples them (bilinearly, then
re-normalised) to its Structure-GAN resolution, as the official code resizes one frame to both.

Everything is deterministic from ``seed``: scene parameters are drawn scene by scene from
``numpy.random.default_rng([seed, index])``, so scene ``i`` is the same whatever the number of
scenes or the chunking. Labels (for the domain classifiers behind FID) are the number of boxes
that are visible (each covering at least 2% of the pixels), 0..3; ``extras["attributes"]``
holds every scene attribute (names in ``meta["attribute_names"]``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ganstack.data.base import ImageDataset
from ganstack.errors import DataError

FOV_DEG = 60.0  # horizontal field of view of every camera
MAX_BOXES = 3
VISIBLE_SHARE = 0.02  # a box counts as visible when it covers this share of the pixels
ATTRIBUTES = ("visible_boxes", "boxes", "wall_palette", "floor_palette")

WALL_PALETTE = np.array(
    [
        [0.85, 0.80, 0.70],  # beige
        [0.60, 0.72, 0.85],  # light blue
        [0.70, 0.82, 0.62],  # sage
        [0.88, 0.66, 0.60],  # terracotta
        [0.78, 0.78, 0.80],  # grey
        [0.90, 0.86, 0.55],  # yellow
    ],
    dtype=np.float32,
)
FLOOR_PALETTE = np.array(
    [
        [0.55, 0.38, 0.22],  # oak
        [0.35, 0.24, 0.16],  # walnut
        [0.50, 0.50, 0.52],  # grey carpet
        [0.72, 0.66, 0.55],  # light tiles
    ],
    dtype=np.float32,
)
CEILING = np.array([0.93, 0.93, 0.90], dtype=np.float32)


def ray_directions(h: int, w: int, fov_deg: float = FOV_DEG) -> np.ndarray:
    """Unit viewing rays of every pixel in camera coordinates, (h * w, 3), row-major."""
    t = math.tan(math.radians(fov_deg) / 2)
    xs = ((np.arange(w, dtype=np.float32) + 0.5) / w * 2 - 1) * t
    ys = -((np.arange(h, dtype=np.float32) + 0.5) / h * 2 - 1) * t * (h / w)
    d = np.stack(np.broadcast_arrays(xs[None, :], ys[:, None], np.float32(-1.0)), -1)
    d = d.reshape(-1, 3)
    return (d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32)


def _scene_params(seed: int, index: int) -> dict[str, np.ndarray]:
    """All random choices of scene ``index`` (one generator per scene)."""
    rng = np.random.default_rng([seed, index])
    room = np.array([rng.uniform(3.0, 6.0), rng.uniform(2.4, 3.0), rng.uniform(3.0, 6.0)])
    half_w, half_d = room[0] / 2, room[2] / 2
    cam = np.array(
        [
            rng.uniform(-half_w + 0.4, half_w - 0.4),
            rng.uniform(1.3, 1.7),
            rng.uniform(-half_d + 0.4, half_d - 0.4),
        ]
    )
    # Look roughly towards the room's centre (or anywhere when standing near it), a bit down.
    to_centre = -cam[[0, 2]]
    base = math.atan2(to_centre[0], to_centre[1]) if np.linalg.norm(to_centre) > 0.3 else 0.0
    yaw = base + rng.uniform(-0.6, 0.6)
    pitch = -rng.uniform(math.radians(8), math.radians(28))
    n_boxes = int(rng.integers(0, MAX_BOXES + 1))
    boxes = np.zeros((MAX_BOXES, 6), dtype=np.float64)  # cx, cz, half x, half z, height, yaw
    colours = np.zeros((MAX_BOXES, 3), dtype=np.float32)
    half_fov = math.radians(FOV_DEG) / 2
    for k in range(n_boxes):
        # One box per sector of the horizontal field of view, so boxes rarely overlap.
        lo = -0.8 * half_fov + k * 1.6 * half_fov / n_boxes
        ang = yaw + lo + rng.uniform(0.15, 0.85) * 1.6 * half_fov / n_boxes
        hx, hz = rng.uniform(0.2, 0.5, size=2)
        r = rng.uniform(1.6, 3.2)
        margin = math.hypot(hx, hz) + 0.05
        cx = float(np.clip(cam[0] + r * math.sin(ang), -half_w + margin, half_w - margin))
        cz = float(np.clip(cam[2] + r * math.cos(ang), -half_d + margin, half_d - margin))
        boxes[k] = [cx, cz, hx, hz, rng.uniform(0.3, 1.0), rng.uniform(0, math.pi / 2)]
        hue = rng.uniform(0, 1)
        colours[k] = _hsv(hue, rng.uniform(0.45, 0.8), rng.uniform(0.55, 0.9))
    light = np.array([rng.uniform(-0.6, 0.6), 1.0, rng.uniform(-0.6, 0.6)])
    return {
        "room": room,
        "cam": cam,
        "yaw": np.array(yaw),
        "pitch": np.array(pitch),
        "n_boxes": np.array(n_boxes),
        "boxes": boxes,
        "box_colours": colours,
        "wall": np.array(int(rng.integers(len(WALL_PALETTE)))),
        "floor": np.array(int(rng.integers(len(FLOOR_PALETTE)))),
        "light": light / np.linalg.norm(light),
        "light_strength": np.array(rng.uniform(0.45, 0.7)),
        "plank": np.array(rng.uniform(0.12, 0.3)),
    }


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array(
        [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], dtype=np.float32
    )


def _camera_basis(yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """(S, 3, 3): rows are the camera's x, y, z axes in world coordinates (z = -forward)."""
    fwd = np.stack([np.cos(pitch) * np.sin(yaw), np.sin(pitch), np.cos(pitch) * np.cos(yaw)], -1)
    z = -fwd
    x = np.cross(np.array([0.0, 1.0, 0.0]), z)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    y = np.cross(z, x)
    return np.stack([x, y, z], 1).astype(np.float32)


def _render_chunk(
    params: list[dict[str, np.ndarray]], h: int, w: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normals (S, 3, h, w) in camera coordinates, RGB (S, 3, h, w) in [0, 1] and the id of
    the surface hit by each pixel (S, h, w): 0 floor, 1 ceiling, 2 walls, 3 + k box k.

    Works on (S, P) arrays, one per vector component, with per-scene values as (S, 1).
    """
    f32 = np.float32
    s = len(params)
    stack = {k: np.stack([q[k] for q in params]) for k in params[0]}
    basis = _camera_basis(stack["yaw"], stack["pitch"])  # (S, 3, 3)
    d = np.matmul(ray_directions(h, w)[None], basis)  # world directions (S, P, 3)
    dx, dy, dz = (np.ascontiguousarray(d[..., i]) for i in range(3))
    cam = stack["cam"].astype(f32)
    ox, oy, oz = (cam[:, i : i + 1] for i in range(3))  # (S, 1)
    room = stack["room"].astype(f32)
    half_w, height, half_d = room[:, 0:1] / 2, room[:, 1:2], room[:, 2:3] / 2

    # ---- the room, seen from inside: the nearest of the three planes the ray moves towards
    with np.errstate(divide="ignore", invalid="ignore"):
        tx = np.where(dx > 0, half_w - ox, -half_w - ox) / dx
        ty = np.where(dy > 0, height - oy, -oy) / dy
        tz = np.where(dz > 0, half_d - oz, -half_d - oz) / dz
    tx[dx == 0], ty[dy == 0], tz[dz == 0] = np.inf, np.inf, np.inf
    t = np.minimum(np.minimum(tx, ty), tz)
    on_x, on_y = tx == t, (ty == t) & (tx != t)
    on_z = ~(on_x | on_y)
    nx = np.where(on_x, -np.sign(dx), 0).astype(f32)
    ny = np.where(on_y, -np.sign(dy), 0).astype(f32)
    nz = np.where(on_z, -np.sign(dz), 0).astype(f32)
    surface = np.where(on_y, np.where(ny > 0, 0, 1), 2).astype(np.int8)

    # ---- boxes on the floor: slab test in each box's own (yawed) frame
    for k in range(MAX_BOXES):
        b = stack["boxes"][:, k].astype(f32)
        present = stack["n_boxes"][:, None] > k
        c, sn = np.cos(b[:, 5:6]), np.sin(b[:, 5:6])
        rx, rz = ox - b[:, 0:1], oz - b[:, 1:2]
        lx, lz = c * rx - sn * rz, sn * rx + c * rz  # ray origin in the box frame, (S, 1)
        ly = oy - b[:, 4:5] / 2
        ldx, ldz = c * dx - sn * dz, sn * dx + c * dz
        halves = (b[:, 2:3], b[:, 4:5] / 2, b[:, 3:4])
        near: Any = None  # the slab test's running (near, far, face, sign), per ray
        far = face = sign = near
        for axis, (o_a, d_a) in enumerate(((lx, ldx), (ly, dy), (lz, ldz))):
            with np.errstate(divide="ignore", invalid="ignore"):
                inv = 1.0 / d_a
                t1, t2 = (-halves[axis] - o_a) * inv, (halves[axis] - o_a) * inv
            lo_t, hi_t = np.minimum(t1, t2), np.maximum(t1, t2)
            if near is None:
                near, far = lo_t, hi_t
                face = np.zeros(lo_t.shape, np.int8)
                sign = -np.sign(d_a)
            else:
                better = lo_t > near
                near = np.where(better, lo_t, near)
                far = np.minimum(far, hi_t)
                face = np.where(better, np.int8(axis), face)
                sign = np.where(better, -np.sign(d_a), sign)
        hit = present & (near < far) & (near > 1e-4) & (near < t)
        # the face's normal, rotated back to the world frame
        lnx = np.where(face == 0, sign, 0)
        lnz = np.where(face == 2, sign, 0)
        t = np.where(hit, near, t)
        nx = np.where(hit, c * lnx + sn * lnz, nx)
        ny = np.where(hit, np.where(face == 1, sign, 0), ny)
        nz = np.where(hit, -sn * lnx + c * lnz, nz)
        surface = np.where(hit, np.int8(3 + k), surface)

    # ---- shading from the normals
    px = ox + t * dx
    plank = np.floor(px / stack["plank"][:, None].astype(f32))
    grain = (0.9 + 0.2 * np.abs(np.sin(plank * 12.9898 + 78.233))).astype(f32)
    light = stack["light"].astype(f32)
    strength = stack["light_strength"][:, None].astype(f32)
    key = np.clip(nx * light[:, 0:1] + ny * light[:, 1:2] + nz * light[:, 2:3], 0, None)
    head = np.clip(-(nx * dx + ny * dy + nz * dz), 0, None)
    shade = (0.32 + strength * key + 0.35 * head) / (1.0 + 0.012 * t * t)
    wall = WALL_PALETTE[stack["wall"]]
    floor = FLOOR_PALETTE[stack["floor"]]
    colours = stack["box_colours"].astype(f32)
    rgb = np.empty((s, h * w, 3), f32)
    for ch in range(3):
        a = np.where(surface == 0, floor[:, ch : ch + 1] * grain, wall[:, ch : ch + 1])
        a = np.where(surface == 1, CEILING[ch], a)
        for k in range(MAX_BOXES):
            a = np.where(surface == 3 + k, colours[:, k, ch : ch + 1], a)
        rgb[..., ch] = np.clip(a * shade, 0, 1)

    n_world = np.stack([nx, ny, nz], -1)
    n_cam = np.matmul(n_world, basis.transpose(0, 2, 1))  # world -> camera coordinates
    n_cam /= np.linalg.norm(n_cam, axis=-1, keepdims=True)

    def image(a: np.ndarray) -> np.ndarray:
        return a.reshape(s, h, w, 3).transpose(0, 3, 1, 2)

    return image(n_cam), image(rgb), surface.reshape(s, h, w).astype(np.int64)


def render_rooms(
    n: int, resolution: int = 64, seed: int = 0, start: int = 0, chunk: int = 64
) -> dict[str, np.ndarray]:
    """Render scenes ``start .. start + n - 1``: float normals and images, surface ids and the
    scene attributes (columns as :data:`ATTRIBUTES`)."""
    if n <= 0 or resolution < 8:
        raise DataError(
            f"rooms: need at least 1 scene of at least 8x8 pixels, got {n} scenes "
            f"of {resolution}x{resolution}"
        )
    if seed < 0:  # numpy's seed sequences take no negative numbers
        raise DataError(f"rooms: data.gen_seed must be >= 0, got {seed}")
    normals = np.empty((n, 3, resolution, resolution), np.float32)
    images = np.empty_like(normals)
    surfaces = np.empty((n, resolution, resolution), np.int64)
    attrs = np.empty((n, len(ATTRIBUTES)), np.int64)
    for s0 in range(0, n, chunk):
        params = [_scene_params(seed, start + i) for i in range(s0, min(n, s0 + chunk))]
        nrm, rgb, surf = _render_chunk(params, resolution, resolution)
        sl = slice(s0, s0 + len(params))
        normals[sl], images[sl], surfaces[sl] = nrm, rgb, surf
        for j, q in enumerate(params):
            share = [(surf[j] == 3 + k).mean() for k in range(MAX_BOXES)]
            visible = sum(sh >= VISIBLE_SHARE for sh in share)
            attrs[s0 + j] = [visible, q["n_boxes"], q["wall"], q["floor"]]
    return {"normals": normals, "images": images, "surfaces": surfaces, "attributes": attrs}


def encode_normals(n: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Unit normals in [-1, 1] -> uint8 p = (n + 1) * 127.5 (S²-GAN's jpg encoding)."""
    t = torch.as_tensor(n, dtype=torch.float32)
    return ((t + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def decode_normals(p: torch.Tensor) -> torch.Tensor:
    """uint8 -> n = p / 127.5 - 1 (not re-normalised)."""
    return p.float() / 127.5 - 1.0


def load_rooms(n: int = 4000, resolution: int = 64, seed: int = 0) -> ImageDataset:
    """``n`` procedural rooms at ``resolution`` x ``resolution`` (images and normals)."""
    out = render_rooms(n, resolution, seed)
    images = torch.from_numpy((out["images"] * 255 + 0.5).astype(np.uint8))
    attrs = torch.from_numpy(out["attributes"])
    return ImageDataset(
        images,
        attrs[:, 0].clone(),
        num_classes=MAX_BOXES + 1,
        name="rooms",
        class_names=[f"{k} boxes" for k in range(MAX_BOXES + 1)],
        extras={"normals": encode_normals(out["normals"]), "attributes": attrs},
        meta={
            "attribute_names": list(ATTRIBUTES),
            "fov_deg": FOV_DEG,
            "seed": seed,
            "normals": "camera coordinates (x right, y up, z towards the viewer), "
            "p = (n + 1) * 127.5",
        },
    )

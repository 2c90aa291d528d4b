"""The embedded sim-to-real driving-video benchmark.

Every frame is ray-cast from a small 3D street scene, so labels and the ground-truth forward flow are exact:

- a camera driving forward (with a lateral sway) at height ``cam_h`` over a ground plane (road, sidewalks,
  terrain strips), between two building walls with a varying skyline and fences in front of them;
- upright billboards for poles, traffic lights and signs, trees, and moving cars, trucks, buses, motorbikes
  and pedestrians, each with its own velocity (several px/frame of independent motion besides the parallax).

A pixel's world point is known from its depth, so its forward flow is the projection of that point (moved by
its object's velocity) into the next camera minus its position now.

The two domains render the same kind of scene with different appearance:

- *source* ("simulation"): clean rendering, the base palette, mild texture;
- *target* ("real"): the palette moved part of the way to another palette, per-class texture, gamma, contrast,
  colour cast, vignetting, blur and sensor noise, plus per-frame nuisances (exposure flicker, noise bursts,
  short-lived occluders on the lens) that temporal aggregation can undo.

``shift`` in [0, 1] scales every difference at once (0: both domains look the same).
"""

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from videoda.data import cityscapes_vps, viper
from videoda.data.classes import CITYSCAPES_TO_TRAIN, CLASSES, NUM_CLASSES, VIPER_TO_TRAIN
from videoda.utils.io import atomic_path
from videoda.utils.progress import progress

C = {name: i for i, name in enumerate(CLASSES)}

# Base ("simulation") palette, RGB; not the Cityscapes visualisation colours.
BASE_PALETTE = np.array([
    (95, 92, 100), (160, 150, 140), (125, 100, 88), (150, 120, 70), (70, 72, 78), (45, 45, 40),
    (215, 190, 40), (60, 125, 45), (140, 160, 85), (150, 190, 235), (190, 70, 70), (55, 70, 170),
    (185, 185, 195), (215, 125, 40), (130, 45, 140),
], dtype=np.float32)

MOVING = ("car", "truck", "bus", "motorbike", "person")


@dataclass
class DomainStyle:
    palette: np.ndarray          # (15, 3) float RGB
    texture_strength: np.ndarray  # (15,) relative amplitude of the value-noise texture
    texture_scale: np.ndarray     # (15,) metres per noise cell
    instance_jitter: float        # per-object colour jitter (RGB units)
    gamma: float = 1.0
    contrast: float = 1.0
    cast: tuple = (0.0, 0.0, 0.0)
    vignette: float = 0.0
    blur_sigma: float = 0.0
    noise_std: float = 0.0
    flicker: float = 0.0          # per-frame exposure gain in [1 - flicker, 1 + flicker]
    burst_prob: float = 0.0       # probability that a frame gets a noise burst
    burst_std: float = 0.0
    occluder_prob: float = 0.0    # probability that a frame gets 1-3 lens occluders (one frame long)


def make_styles(shift: float, seed: int):
    """Source and target styles for a given shift strength."""
    if not 0.0 <= shift <= 1.0:
        raise ValueError(f"synth.shift must be in [0, 1], got {shift}")
    rng = np.random.default_rng(seed + 7919)
    n = len(CLASSES)
    source = DomainStyle(BASE_PALETTE.copy(), np.full(n, 0.15, np.float32), np.full(n, 1.0, np.float32), 18.0)
    # Move each class colour about halfway (at shift 1: 55%) towards a random other colour.  A full swap
    # would make classes trade colours, which no method can undo.
    other = rng.uniform(20, 235, size=(n, 3)).astype(np.float32)
    palette = BASE_PALETTE + 0.55 * shift * (other - BASE_PALETTE)
    target = DomainStyle(
        palette=palette,
        texture_strength=(0.15 + shift * rng.uniform(0.1, 0.35, n)).astype(np.float32),
        texture_scale=(1.0 * np.exp(shift * rng.uniform(-1.2, 0.5, n))).astype(np.float32),
        instance_jitter=18.0 + 12.0 * shift,
        gamma=1.0 + 0.35 * shift,
        contrast=1.0 - 0.3 * shift,
        cast=tuple((shift * rng.uniform(-25, 25, 3)).tolist()),
        vignette=0.45 * shift,
        blur_sigma=0.7 * shift,
        noise_std=5.0 * shift,
        flicker=0.3 * shift,
        burst_prob=0.2 * shift,
        burst_std=28.0 * shift,
        occluder_prob=0.3 * shift,
    )
    return source, target


def value_noise(a, b, seed):
    """Smooth 2D value noise in [0, 1] at float coordinates (a, b); deterministic in ``seed``."""
    ia, ib = np.floor(a), np.floor(b)
    fa, fb = a - ia, b - ib
    fa, fb = fa * fa * (3 - 2 * fa), fb * fb * (3 - 2 * fb)
    ia, ib = ia.astype(np.int64), ib.astype(np.int64)

    def h(x, y):
        v = (x * 73856093) ^ (y * 19349663) ^ (seed * 83492791)
        v = (v ^ (v >> 13)) * 1274126177
        return ((v ^ (v >> 16)) & 0xFFFF).astype(np.float32) / 65535.0

    top = h(ia, ib) * (1 - fa) + h(ia + 1, ib) * fa
    bot = h(ia, ib + 1) * (1 - fa) + h(ia + 1, ib + 1) * fa
    return top * (1 - fb) + bot * fb


class Scene:
    """One driving sequence: a fixed layout and a camera trajectory; ``render(t)`` gives frame t."""

    def __init__(self, rng: np.random.Generator, height: int, width: int, n_frames: int):
        self.H, self.W, self.T = height, width, n_frames
        self.f = width * rng.uniform(0.85, 1.0)
        self.cx = width / 2 + rng.uniform(-3, 3)
        self.y_h = height * rng.uniform(0.38, 0.46)
        self.cam_h = rng.uniform(1.4, 1.7)
        self.speed = rng.uniform(0.5, 0.9)           # metres per frame
        self.sway = rng.uniform(0.0, 0.6), rng.uniform(0.05, 0.2), rng.uniform(0, 2 * np.pi)
        self.road = rng.uniform(3.2, 4.5)             # half width
        self.walk = rng.uniform(1.8, 3.0)             # sidewalk width
        self.wall = self.road + self.walk + rng.uniform(1.5, 4.0)
        self.fence_x = self.wall - 0.6
        length = self.speed * n_frames + 80.0
        self.length = length
        # Skyline: blocks of random length and height along Z, gaps show the sky (height 0).
        edges = np.cumsum(rng.uniform(6, 18, size=64))
        self.block_edges = edges[edges < length + 40]
        heights = rng.uniform(5, 22, size=len(self.block_edges) + 1)
        heights[rng.random(len(heights)) < 0.2] = 0.0
        self.block_heights = [heights, rng.permutation(heights)]   # left, right walls
        self.terrain = self._intervals(rng, length, 0.6)
        self.fence = self._intervals(rng, length, 0.35)
        self.objects = self._place_objects(rng, length)
        self.instance_seed = int(rng.integers(1 << 30))

    @staticmethod
    def _intervals(rng, length, frac):
        starts = np.arange(0, length + 40, 20.0)
        keep = rng.random(len(starts)) < frac
        return [(s + rng.uniform(0, 5), s + rng.uniform(8, 20)) for s in starts[keep]]

    def _place_objects(self, rng, length):
        objs = []

        def add(cls, x, z, size, y0=0.0, velocity=(0.0, 0.0), shape="rect"):
            """An object of class ``cls`` at (x, z), ``size`` (w, h), bottom at height ``y0``, moving by
            ``velocity`` (vx, vz) per frame."""
            (w, h), (vx, vz) = size, velocity
            objs.append(dict(cls=C[cls], x=x, z=z, w=w, h=h, y0=y0, vx=vx, vz=vz, shape=shape,
                             jitter=rng.uniform(-1, 1, 3)))

        edge = self.road + self.walk - 0.25
        for z in np.arange(rng.uniform(4, 12), length, rng.uniform(12, 22)):
            side = rng.choice([-1, 1])
            ph = rng.uniform(4.0, 6.0)
            add("pole", side * edge, z, (0.35, ph))
            kind = rng.random()
            if kind < 0.35:
                add("traffic light", side * edge - side * 0.5, z - 0.05, (0.8, 1.6), y0=ph - 1.6)
            elif kind < 0.7:
                add("traffic sign", side * edge - side * 0.4, z - 0.05, (1.1, 1.1), y0=ph - 2.0,
                    shape=rng.choice(["rect", "disc"]))
        for z in np.arange(rng.uniform(3, 10), length, rng.uniform(7, 14)):
            side = rng.choice([-1, 1])
            x = side * rng.uniform(self.road + self.walk + 0.5, self.wall - 0.8)
            add("vegetation", x, z, (rng.uniform(2.5, 4.5), rng.uniform(2.5, 4.0)),
                y0=rng.uniform(1.5, 2.5), shape="disc")
            add("vegetation", x, z + 0.01, (0.35, 2.5))      # trunk
        n_vehicles = rng.poisson(0.12 * length)
        for _ in range(n_vehicles):
            lane = rng.choice([-1, 1])
            kind = rng.choice(["car", "car", "car", "truck", "bus", "motorbike"])
            w, h = dict(car=(1.9, 1.5), truck=(2.5, 3.2), bus=(2.6, 3.1), motorbike=(0.8, 1.2))[kind]
            # Right lane drives with us (slower or faster), left lane comes towards us.
            vz = self.speed * rng.uniform(0.3, 1.3) if lane > 0 else -rng.uniform(0.4, 1.0)
            x = lane * rng.uniform(1.3, self.road - 1.4)
            z = rng.uniform(6, length)
            add(kind, x, z, (w, h), velocity=(0.0, vz), shape="vehicle" if kind == "car" else "rect")
            if kind == "motorbike":
                add("person", x, z - 0.01, (0.6, 1.0), y0=0.8, velocity=(0.0, vz))
        for _ in range(rng.poisson(0.12 * length)):
            side = rng.choice([-1, 1])
            x = side * rng.uniform(self.road + 0.3, self.road + self.walk - 0.3)
            crossing = rng.random() < 0.15
            vx = -side * rng.uniform(0.06, 0.12) if crossing else 0.0
            vz = 0.0 if crossing else rng.choice([-1, 1]) * rng.uniform(0.04, 0.1)
            add("person", x, rng.uniform(4, length), (0.6, rng.uniform(1.6, 1.9)), velocity=(vx, vz), shape="person")
        return objs

    def camera(self, t):
        amp, freq, phase = self.sway
        return amp * np.sin(freq * t + phase), self.speed * t

    def _skyline(self, side, z):
        idx = np.searchsorted(self.block_edges, z)
        return self.block_heights[side][idx]

    @staticmethod
    def _in_intervals(z, intervals):
        m = np.zeros(z.shape, bool)
        for a, b in intervals:
            m |= (z >= a) & (z < b)
        return m

    def render(self, t):
        """Return labels (H, W) uint8, depth, surface coordinates (a, b), instance ids and forward flow."""
        H, W, f = self.H, self.W, self.f
        xc, zc = self.camera(t)
        ys, xs = np.mgrid[0:H, 0:W].astype(np.float32) + 0.5
        rx, ry = (xs - self.cx) / f, (ys - self.y_h) / f      # ray direction per unit depth
        inf = np.float32(np.inf)
        depth = np.full((H, W), inf, np.float32)
        label = np.full((H, W), C["sky"], np.uint8)
        sa, sb = xs / 8, ys / 8                               # surface coordinates for texture
        inst = np.zeros((H, W), np.int32)
        vel = np.zeros((H, W, 2), np.float32)                 # world velocity (vx, vz) of the surface

        def paint(mask, d, cls, a, b, iid=0, v=(0.0, 0.0), window=(slice(None), slice(None))):
            # the pixels of ``mask`` nearer than what is there; ``mask``, ``d``, ``a``, ``b`` (and ``cls`` if an
            # array) cover the frame's ``window`` (a billboard's bounding box, not the whole frame: 3x faster)
            m = mask & (d < depth[window])
            depth[window][m] = d[m]
            label[window][m] = cls if np.isscalar(cls) else cls[m]
            sa[window][m], sb[window][m] = a[m], b[m]
            inst[window][m] = iid
            vel[window][m] = v

        with np.errstate(divide="ignore", invalid="ignore"):
            # Ground plane Y = 0.
            d = np.where(ry > 0, self.cam_h / ry, inf)
            gx, gz = xc + rx * d, zc + d
            ax = np.abs(gx)
            ground = np.where(ax < self.road, C["road"], C["sidewalk"]).astype(np.uint8)
            ground[(ax > self.road + self.walk) & self._in_intervals(gz, self.terrain)] = C["terrain"]
            # Lane marking: dashes on the centre line, painted as road (texture only).
            paint(np.isfinite(d), d, ground, gx, gz)
            # Fences (see-through bars) and building walls at X = +-const.
            for side, sign in ((0, -1), (1, 1)):
                for xw, is_fence in ((self.fence_x, True), (self.wall, False)):
                    d = np.where(rx * sign > 0, (sign * xw - xc) / rx, inf)
                    wy, wz = self.cam_h - ry * d, zc + d
                    if is_fence:
                        solid = (np.mod(wz, 0.5) < 0.3) | (np.abs(wy - 1.3) < 0.12)
                        m = (wy > 0) & (wy < 1.45) & self._in_intervals(wz, self.fence) & solid
                        paint(m & np.isfinite(d), d, C["fence"], wz, wy)
                    else:
                        m = (wy > 0) & (wy < self._skyline(side, wz))
                        paint(m & np.isfinite(d), d, C["building"], wz, wy)
        # Billboards, moved by their own velocity.
        for i, o in enumerate(self.objects):
            ox, oz = o["x"] + o["vx"] * t, o["z"] + o["vz"] * t
            d0 = oz - zc
            if d0 < 0.8 or d0 > 120:
                continue
            x0 = self.cx + f * (ox - o["w"] / 2 - xc) / d0
            x1 = self.cx + f * (ox + o["w"] / 2 - xc) / d0
            y1 = self.y_h + f * (self.cam_h - o["y0"]) / d0
            y0 = self.y_h + f * (self.cam_h - o["y0"] - o["h"]) / d0
            c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), W)
            r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), H)
            if c0 >= c1 or r0 >= r1:
                continue
            sl = (slice(r0, r1), slice(c0, c1))
            u = (xs[sl] - x0) / (x1 - x0)
            v = (y1 - ys[sl]) / (y1 - y0)                 # 0 at the bottom, 1 at the top
            mask = (u >= 0) & (u < 1) & (v >= 0) & (v < 1) & _shape_mask(o["shape"], u, v)
            d = np.full(u.shape, d0, np.float32)
            a, b = (u * o["w"]).astype(np.float32), (v * o["h"]).astype(np.float32)
            paint(mask, d, o["cls"], a, b, iid=i + 1, v=(o["vx"], o["vz"]), window=sl)
        flow = self._flow(t, xs, ys, rx, ry, depth, vel)
        return label, depth, sa, sb, inst, flow

    def _flow(self, t, xs, ys, rx, ry, depth, vel):
        """Forward flow t -> t+1: project each pixel's world point (moved by its velocity) into camera t+1."""
        xc0, zc0 = self.camera(t)
        xc1, zc1 = self.camera(t + 1)
        finite = np.isfinite(depth)
        d = np.where(finite, depth, 1.0)
        X = xc0 + rx * d + vel[..., 0]
        Y = self.cam_h - ry * d
        Z = zc0 + d + vel[..., 1]
        d1 = np.maximum(Z - zc1, 0.3)
        x1 = self.cx + self.f * (X - xc1) / d1
        y1 = self.y_h + self.f * (self.cam_h - Y) / d1
        flow = np.stack([x1 - xs, y1 - ys], axis=-1).astype(np.float32)
        # The sky is at infinity: a camera that only translates does not move it.
        flow[~finite] = 0.0
        return flow


def _shape_mask(shape, u, v):
    if shape == "disc":
        return (u - 0.5) ** 2 + (v - 0.5) ** 2 < 0.25
    if shape == "vehicle":       # body below, narrower cabin above
        return (v < 0.6) | ((u > 0.18) & (u < 0.82))
    if shape == "person":        # head disc on a body
        return ((v < 0.82) & (np.abs(u - 0.5) < 0.4)) | ((u - 0.5) ** 2 + ((v - 0.9) * 1.6) ** 2 < 0.06)
    return np.ones(u.shape, bool)


def shade(scene: Scene, render, style: DomainStyle, rng: np.random.Generator, t: int):
    """Turn a rendered frame into an RGB image in the given domain style (frame-level nuisances included)."""
    label, depth, sa, sb, inst, _ = render
    H, W = label.shape
    scale = style.texture_scale[label]
    tex = value_noise(sa / scale, sb / scale, 17) - 0.5
    tex2 = value_noise(sa / (0.25 * scale), sb / (0.25 * scale), 29) - 0.5
    rgb = style.palette[label] * (1 + style.texture_strength[label][..., None] * (tex + 0.5 * tex2)[..., None])
    # Facade windows and lane dashes: structure shared by both domains.
    win = (label == C["building"]) & (np.mod(sa, 3.0) < 1.2) & (np.mod(sb, 3.0) > 1.2) & (np.mod(sb, 3.0) < 2.3)
    rgb[win] *= 0.55
    dash = (label == C["road"]) & (np.abs(sa) < 0.12) & (np.mod(sb, 6.0) < 3.0)
    rgb[dash] = 230
    # Per-object colour jitter.
    jit = np.random.default_rng(scene.instance_seed).uniform(-1, 1, (len(scene.objects) + 1, 3)).astype(np.float32)
    jit[0] = 0
    rgb += style.instance_jitter * jit[inst]
    # Aerial perspective: far surfaces fade towards the sky colour.
    fog = 1 - np.exp(-np.where(np.isfinite(depth), depth, 1e3) / 90.0)
    rgb = rgb * (1 - fog[..., None]) + style.palette[C["sky"]] * fog[..., None]
    # Camera: gamma, contrast, colour cast, vignetting, blur, noise.
    x = np.clip(rgb / 255.0, 0, 1) ** style.gamma
    x = (x - 0.5) * style.contrast + 0.5 + np.asarray(style.cast, np.float32) / 255.0
    if style.vignette:
        yy, xx = np.mgrid[0:H, 0:W]
        r2 = ((yy - H / 2) / (H / 2)) ** 2 + ((xx - W / 2) / (W / 2)) ** 2
        x *= (1 - style.vignette * r2 / 2)[..., None]
    if style.flicker:
        x *= rng.uniform(1 - style.flicker, 1 + style.flicker)
    x = x * 255.0
    if style.occluder_prob and rng.random() < style.occluder_prob:
        for _ in range(rng.integers(1, 4)):
            cy, cx_, r = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(0.06, 0.14) * H
            yy, xx = np.mgrid[0:H, 0:W]
            m = (yy - cy) ** 2 + ((xx - cx_) * 0.7) ** 2 < r * r
            x[m] = rng.uniform(0, 255, 3)
    if style.blur_sigma:
        x = cv2.GaussianBlur(x, (0, 0), style.blur_sigma)
    std = style.noise_std
    if style.burst_prob and rng.random() < style.burst_prob:
        std = max(std, style.burst_std)
    if std:
        x = x + rng.normal(0, std, x.shape)
    return np.clip(x, 0, 255).round().astype(np.uint8)


def iter_sequence(seed: int, height: int, width: int, n_frames: int, style: DomainStyle):
    """Render a sequence frame by frame: (image (H, W, 3), labels (H, W), flow (H, W, 2) to the next frame, None
    for the last). One frame in memory at a time, whatever the resolution and length."""
    rng = np.random.default_rng(seed)
    scene = Scene(rng, height, width, n_frames)
    for t in range(n_frames):
        r = scene.render(t)
        yield shade(scene, r, style, rng, t), r[0], r[5] if t < n_frames - 1 else None


def render_sequence(seed: int, height: int, width: int, n_frames: int, style: DomainStyle):
    """Render a whole sequence: images (T, H, W, 3), labels (T, H, W), flows (T - 1, H, W, 2)."""
    images, labels, flows = zip(*iter_sequence(seed, height, width, n_frames, style))
    return np.stack(images), np.stack(labels), np.stack(flows[:-1])


# --- the benchmark in the real datasets' layouts (stage `synth`) ---------------------------------------------

def inverse_map(table):
    """train id -> the first dataset id that maps to it (the generator labels in train ids)."""
    inv = np.full(256, 255, np.uint8)
    for ds_id, train_id in sorted(table.items(), reverse=True):
        if train_id < NUM_CLASSES:
            inv[train_id] = ds_id
    missing = [c for c in range(NUM_CLASSES) if inv[c] == 255]
    if missing:
        raise RuntimeError(f"no dataset id maps to train ids {missing}")
    return inv


def write_benchmark(out, cfg, show_progress=False):
    """Render the benchmark of ``cfg`` (``videoda.config.Synth``) into ``out/{viper,cityscapes_vps,flow_gt}``:
    source sequences in VIPER's layout (every frame labelled, VIPER ids, all recorded as "day" in
    ``conditions.csv``), target train and val clips in
    Cityscapes-VPS's (labels on every ``label_every``-th frame), and each target clip's exact forward flow as
    ``flow_gt/<split>/<clip>.npy``. Each of the three folders appears complete or not at all. Rendered on the CPU, with
    a progress bar if ``show_progress``."""
    source_style, target_style = make_styles(cfg.shift, cfg.seed)
    to_viper, to_cityscapes = inverse_map(VIPER_TO_TRAIN), inverse_map(CITYSCAPES_TO_TRAIN)
    counts = {"source": cfg.source_sequences, "train": cfg.target_train_clips, "val": cfg.target_val_clips}
    frames, out = cfg.frames_per_clip, Path(out)
    with atomic_path(out / "viper") as viper_root, atomic_path(out / "cityscapes_vps") as vps_root, \
            atomic_path(out / "flow_gt") as flow_root:
        # VIPER's per-sequence conditions: every source sequence is "day", the paper's training condition
        viper.write_conditions(viper_root, "train", {i + 1: "day" for i in range(counts["source"])})
        jobs = [("source", "train", i) for i in range(counts["source"])]
        jobs += [("target", split, i) for split in ("train", "val") for i in range(counts[split])]
        for k, (domain, split, i) in enumerate(progress(jobs, "synth", show_progress)):
            # Distinct seeds per domain and split: the target never shows a source scene.
            seq_seed = cfg.seed * 100003 + k
            style = source_style if domain == "source" else target_style
            sequence = iter_sequence(seq_seed, cfg.height, cfg.width, frames, style)
            if domain == "source":
                for t, (image, labels, _) in enumerate(sequence):
                    viper.write_frame(viper_root, split, i + 1, t, image, to_viper[labels])
                continue
            clip_id = i + 1
            flow_dir = flow_root / split
            flow_dir.mkdir(parents=True, exist_ok=True)
            # Appended frame by frame after the .npy header: the bytes of np.save of the stacked flows, without the
            # stack (nor a memory map, whose dirty pages would count in the process's memory).
            with open(flow_dir / f"{clip_id:04d}.npy", "wb") as flows:
                np.lib.format.write_array_header_1_0(flows, {"descr": np.lib.format.dtype_to_descr(np.dtype(
                    np.float32)), "fortran_order": False, "shape": (frames - 1, cfg.height, cfg.width, 2)})
                for t, (image, labels, flow) in enumerate(sequence):
                    annotated = (t + 1) % cfg.label_every == 0
                    lab = to_cityscapes[labels] if annotated else None
                    cityscapes_vps.write_frame(vps_root, split, clip_id, t, image, lab)
                    if flow is not None:
                        flows.write(np.ascontiguousarray(flow, dtype=np.float32).tobytes())

"""``ganstack explore``: a local web page that shows a trained stack level by level.

:class:`Explorer` is the part without a web server: it renders one sample of a run (or an
export) from one seed per input, so that *holding* a level's noise is keeping its seed and
*resampling* it is drawing a new seed; it interpolates one level's noise between two seeds;
and it measures, once, which outputs each input changes (the stack's real dependencies, shown
on the page beside each control). :mod:`ganstack.explore.server` serves it with Starlette.
"""

from __future__ import annotations

import base64
import io
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ganstack.errors import GanstackError

SEED_MAX = 2**63 - 1
CAPTION_MAX = 500  # characters
STRIP_MAX = 16  # interpolation steps in one strip
CONTEXT = 16  # samples generated beside the shown one by a model that samples with batch BN
PROBE_SEEDS = (1, 2)  # the base and the changed seed of the dependency probe

# Class names of the bundled datasets (the data's own names are not kept in a checkpoint).
_DIGITS = [str(k) for k in range(10)]
CLASS_NAMES = {
    "mnist": _DIGITS,
    "mnist5k": _DIGITS,
    "svhn": _DIGITS,
    "cifar10": [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ],
}
# What a noise input of each name does, for the page (z0, z1, ... are described by level).
NOISE_HELP = {
    "z": "the noise of the whole tree (every scale)",
    "ca": "conditioning augmentation: the text condition is mu(text) + sigma(text) * ca",
    "ca1": "Stage-I conditioning augmentation (mu + sigma * ca1)",
    "ca2": "Stage-II conditioning augmentation (mu + sigma * ca2)",
}


class ExploreError(GanstackError):
    """A request the explorer cannot serve (an unknown input, a seed out of range, ...)."""


def class_names(data_name: str, num_classes: int) -> list[str]:
    """The names of the classes of a bundled dataset, else ``class 0``, ``class 1``, ..."""
    names = CLASS_NAMES.get(data_name)
    if data_name == "shapes":
        from ganstack.data.shapes import COLOURS, SHAPES

        names = [f"{c} {s}" for s in SHAPES for c in COLOURS]
    if names is None or len(names) != num_classes:
        return [f"class {k}" for k in range(num_classes)]
    return [f"{k}: {n}" if n != str(k) else n for k, n in enumerate(names)]


def example_captions(data_name: str, n: int = 6) -> list[str]:
    """Captions to start from: the captioned shapes' own, drawn with a fixed seed."""
    if data_name != "shapes":
        return []
    from ganstack.data.shapes import caption, draw_attributes

    rng = np.random.default_rng(0)
    attrs = draw_attributes(n, rng)
    return [caption({k: v[i] for k, v in attrs.items()}, rng)[0] for i in range(n)]


def png_data_url(image: torch.Tensor) -> str:
    """(C, H, W) in [0, 1] -> a ``data:image/png;base64,`` URL."""
    from PIL import Image

    x = (image.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    pil = Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def as_picture(t: torch.Tensor) -> torch.Tensor | None:
    """One sample's output as a (C, H, W) picture in [0, 1]: an image as it is (1 or 3
    channels), a feature map as its channel mean and a feature vector as a near-square tile,
    both scaled to [0, 1]; None for anything else."""
    t = t.detach().float().cpu()
    if t.dim() == 3 and t.shape[0] in (1, 3):
        return t.clamp(0, 1)
    if t.dim() == 3:
        t = t.mean(0, keepdim=True)
    elif t.dim() == 1:
        side = math.ceil(math.sqrt(len(t)))
        t = torch.cat([t, t.new_zeros(side * side - len(t))]).reshape(1, side, side)
    else:
        return None
    lo, hi = float(t.min()), float(t.max())
    return (t - lo) / (hi - lo) if hi > lo else torch.zeros_like(t)


@dataclass
class Request:
    """What to render: one seed per noise input, the class, the caption (or, without one, a
    seed that picks a training caption) and, optionally, one input interpolated from its seed
    to ``seed_b`` at ``t`` (with a ``strip`` of that many steps from 0 to 1)."""

    seeds: dict[str, int] = field(default_factory=dict)
    y: int | None = None
    caption: str | None = None
    text_seed: int = 0
    interpolate: str | None = None
    seed_b: int = 0
    t: float = 0.0
    strip: int = 0

    @classmethod
    def parse(cls, body: Any, explorer: Explorer) -> Request:
        """A request from the page's JSON, checked (an :class:`ExploreError` says what is
        wrong)."""
        if not isinstance(body, dict):
            raise ExploreError("the request must be a JSON object")
        unknown = set(body) - {"seeds", "y", "caption", "text_seed", "interpolate"}
        if unknown:
            raise ExploreError(f"unknown request fields {sorted(unknown)}")
        noise = list(explorer.noise)
        seeds = body.get("seeds") or {}
        if not isinstance(seeds, dict):
            raise ExploreError("'seeds' must map each noise input to a seed")
        bad = set(seeds) - set(noise)
        if bad:
            raise ExploreError(f"unknown noise inputs {sorted(bad)}; this model's are {noise}")
        req = cls(seeds={n: _seed(seeds.get(n, 0), n) for n in noise})
        if explorer.conditional:
            y = body.get("y", 0)
            k = explorer.num_classes
            if not _is_int(y) or not 0 <= y < k:
                raise ExploreError(f"'y' must be a class in 0..{k - 1}, got {y!r}")
            req.y = int(y)
        elif body.get("y") is not None:
            raise ExploreError("this model is unconditional: it takes no class")
        cap = body.get("caption")
        if cap is not None and cap != "":
            if not explorer.text:
                raise ExploreError("this model takes no caption")
            if not isinstance(cap, str) or len(cap) > CAPTION_MAX:
                raise ExploreError(
                    f"'caption' must be a string of at most {CAPTION_MAX} characters"
                )
            req.caption = cap.strip() or None
        req.text_seed = _seed(body.get("text_seed", 0), "text_seed")
        interp = body.get("interpolate")
        if interp is not None:
            if not isinstance(interp, dict):
                raise ExploreError("'interpolate' must be {input, seed_b, t, strip}")
            name = interp.get("input")
            if name not in noise:
                raise ExploreError(f"cannot interpolate {name!r}: the noise inputs are {noise}")
            t = interp.get("t", 0.0)
            if isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t <= 1:
                raise ExploreError(f"'t' must be a number in [0, 1], got {t!r}")
            strip = interp.get("strip", 0)
            if not _is_int(strip) or not 0 <= strip <= STRIP_MAX:
                raise ExploreError(f"'strip' must be 0..{STRIP_MAX} steps, got {strip!r}")
            req.interpolate, req.t, req.strip = name, float(t), int(strip)
            req.seed_b = _seed(interp.get("seed_b", 0), "seed_b")
        return req


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _seed(v: Any, name: str) -> int:
    if not _is_int(v) or not 0 <= v <= SEED_MAX:
        raise ExploreError(f"the seed of {name} must be an integer in 0..{SEED_MAX}, got {v!r}")
    return int(v)


class Explorer:
    """One sample of a loaded run or export (:func:`ganstack.load`), rendered from seeds.

    Thread-safe: one render at a time (a model's sampling mode is state on the model)."""

    def __init__(self, run: Any, source: str = "") -> None:
        self.run = run
        self.model = run.model
        self.source = source or str(getattr(run, "run_dir", ""))
        self.noise: dict[str, int] = dict(self.model.noise_dims())
        self.conditional = bool(self.model.conditional)
        self.num_classes = int(self.model.info.num_classes) if self.conditional else 0
        self.text = "text" in self.model.condition_dims()
        data = getattr(run.config, "data", None)
        self.data_name = str(getattr(data, "name", "") or self.model.info.name)
        self.can_caption = self.text and getattr(data, "text_encoder", "hash") != "pickle"
        self._lock = threading.Lock()
        self._captions: OrderedDict[str, torch.Tensor] = OrderedDict()
        # A model that samples with batch statistics sees the shown sample among CONTEXT
        # others, drawn once (seed 0): a batch of one has no statistics to speak of.
        self.batch_bn = getattr(self.model.cfg, "sample_bn", "eval") == "batch"
        self._context = (
            self.model.draw_inputs(CONTEXT, generator=torch.Generator().manual_seed(0))
            if self.batch_bn
            else None
        )
        self.outputs, self.affects = self._probe()

    # ---- inputs ---------------------------------------------------------------------------

    def noise_vector(self, name: str, seed: int) -> torch.Tensor:
        """Input ``name``'s noise drawn from its own ``seed``: (1, dim)."""
        gen = torch.Generator().manual_seed(seed)
        return self.model._noise(1, self.noise[name], gen)

    def interpolated(self, name: str, seed_a: int, seed_b: int, t: torch.Tensor) -> torch.Tensor:
        """(len(t), dim): ``name``'s noise from seed a (t=0) to seed b (t=1). Normal noise is
        interpolated on the sphere (slerp), which keeps its norm typical; uniform noise
        linearly, which keeps it in [0, 1)."""
        a, b = self.noise_vector(name, seed_a), self.noise_vector(name, seed_b)
        t = t.to(a).reshape(-1, 1)
        mix = torch.lerp(a, b, t)
        if self.model.noise_distribution != "uniform":
            omega = math.acos(float(torch.nn.functional.cosine_similarity(a, b).clamp(-1, 1)))
            if omega > 1e-6:
                mix = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / math.sin(omega)
        # The ends exactly: t = 0 is the sample of seed a, t = 1 that of seed b.
        return torch.where(t <= 0, a, torch.where(t >= 1, b, mix))

    def caption_embedding(self, caption: str) -> torch.Tensor:
        if not self.can_caption:
            raise ExploreError(
                "this run's captions were embedded by a pickle of the dataset's "
                "char-CNN-RNN encoder, which cannot encode new captions; pick "
                "training captions by their seed instead"
            )
        emb = self._captions.get(caption)
        if emb is None:
            emb = self.run.encode_captions([caption])[:1].float()
            self._captions[caption] = emb
            while len(self._captions) > 256:
                self._captions.popitem(last=False)
        return emb

    def inputs(self, req: Request, rows: int = 1) -> dict[str, torch.Tensor]:
        """The model's inputs for ``req``, repeated over ``rows``."""
        dev = self.model.device
        out: dict[str, torch.Tensor] = {}
        if self.conditional:
            out["y"] = torch.full((rows,), int(req.y or 0), dtype=torch.long, device=dev)
        if self.text:
            if req.caption:
                emb = self.caption_embedding(req.caption)
            else:
                emb = self.model.draw_condition(
                    "text", 1, torch.Generator().manual_seed(req.text_seed)
                )
            out["text"] = emb.to(dev).expand(rows, -1).contiguous()
        for name in self.noise:
            z = self.noise_vector(name, req.seeds.get(name, 0))
            out[name] = z.to(dev).expand(rows, -1).contiguous()
        return out

    # ---- generating -----------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The model's outputs (CPU, float) for ``inputs``; the same inputs always give the
        same outputs (torch's global generator is seeded, then put back)."""
        n = len(next(iter(inputs.values())))
        if self._context is not None:
            inputs = {k: torch.cat([v, self._context[k].to(v)]) for k, v in inputs.items()}
        with self._lock, torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            with self.model.sampling_mode():
                out = self.model.generate(inputs)
        # An output that is another name for the image (LAPGAN's level0) is shown once.
        image = out.get("image")
        return {
            k: v[:n].detach().float().cpu()
            for k, v in out.items()
            if torch.is_tensor(v)
            and k not in inputs
            and v.dim() >= 2
            and len(v) >= n
            and (k == "image" or image is None or v is not image)
        }

    def _probe(self) -> tuple[list[str], dict[str, list[str]]]:
        """The outputs that can be shown, coarse to fine, and the outputs each input changes
        (measured: each input drawn again from another seed, the rest held)."""
        a, b = PROBE_SEEDS
        base_req = Request(
            seeds=dict.fromkeys(self.noise, a), y=0 if self.conditional else None, text_seed=a
        )
        base = self.generate(self.inputs(base_req))
        shown = [k for k, v in base.items() if as_picture(v[0]) is not None]
        changes: dict[str, list[str]] = {}
        variants: list[tuple[str, Request]] = []
        for name in self.noise:
            variants.append(
                (name, Request(seeds={**base_req.seeds, name: b}, y=base_req.y, text_seed=a))
            )
        if self.conditional and self.num_classes > 1:
            variants.append(("y", Request(seeds=base_req.seeds, y=1, text_seed=a)))
        if self.text:
            variants.append(("text", Request(seeds=base_req.seeds, y=base_req.y, text_seed=b)))
        for name, req in variants:
            out = self.generate(self.inputs(req))
            changes[name] = [k for k in shown if not torch.equal(out[k], base[k])]
        # Coarse to fine: an output that fewer noise inputs reach sits higher in the stack;
        # then the smaller first, then the model's order (image_outputs, coarsest first); the
        # image last.
        declared = [k for k in self.model.image_outputs() if k in shown]
        order = declared + [k for k in shown if k not in declared]

        def key(k: str) -> tuple[int, int, int, int]:
            reach = sum(k in changes.get(n, []) for n in self.noise)
            return (k == "image", reach, base[k][0].numel(), order.index(k))

        return sorted(shown, key=key), {
            n: [k for k in sorted(shown, key=key) if k in c] for n, c in changes.items()
        }

    def render(self, req: Request) -> dict[str, Any]:
        """Every output of ``req``'s sample as a PNG data URL, and the interpolation strip
        (the final image at evenly spaced t) when asked for."""
        inputs = self.inputs(req)
        if req.interpolate:
            name = req.interpolate
            inputs[name] = self.interpolated(
                name, req.seeds[name], req.seed_b, torch.tensor([req.t])
            ).to(inputs[name])
        out = self.generate(inputs)
        res: dict[str, Any] = {
            "outputs": {
                k: png_data_url(as_picture(out[k][0]))  # type: ignore[arg-type]
                for k in self.outputs
            }
        }
        if req.interpolate and req.strip:
            name = req.interpolate
            steps = torch.linspace(0, 1, req.strip)
            rows = self.inputs(req, req.strip)
            rows[name] = self.interpolated(name, req.seeds[name], req.seed_b, steps).to(rows[name])
            images = self.generate(rows)["image"]
            res["strip"] = [png_data_url(as_picture(x)) for x in images]  # type: ignore[arg-type]
        return res

    # ---- description ----------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What the page needs to build its controls."""
        probe = self.generate(
            self.inputs(
                Request(seeds=dict.fromkeys(self.noise, 0), y=0 if self.conditional else None)
            )
        )
        levels = []
        names = list(self.noise)
        for i, name in enumerate(names):
            if name in NOISE_HELP:
                text = NOISE_HELP[name]
            elif name.startswith("z") and name[1:].isdigit():
                where = " (top)" if i == 0 else " (bottom)" if i == len(names) - 1 else ""
                text = f"the noise of level {name[1:]}{where}"
            else:
                text = "a noise input"
            levels.append(
                {
                    "name": name,
                    "dim": self.noise[name],
                    "help": text,
                    "affects": self.affects.get(name, []),
                }
            )
        outputs = []
        for k in self.outputs:
            pic = as_picture(probe[k][0])
            assert pic is not None
            kind = "image" if probe[k].dim() == 4 and probe[k].shape[1] in (1, 3) else "features"
            outputs.append(
                {
                    "name": k,
                    "kind": kind,
                    "height": int(pic.shape[1]),
                    "width": int(pic.shape[2]),
                    "shape": list(probe[k].shape[1:]),
                }
            )
        model = self.model
        return {
            "model": model.name,
            "source": self.source,
            "step": int(getattr(self.run, "step", 0)),
            "checkpoint": str(getattr(self.run, "checkpoint", "")),
            "data": self.data_name,
            "noise_distribution": model.noise_distribution,
            "batch_bn": self.batch_bn,
            "levels": levels,
            "outputs": outputs,
            "classes": (class_names(self.data_name, self.num_classes) if self.conditional else []),
            "class_affects": self.affects.get("y", []),
            "text": self.text,
            "can_caption": self.can_caption,
            "text_affects": self.affects.get("text", []),
            "example_captions": example_captions(self.data_name) if self.can_caption else [],
            "strip_max": STRIP_MAX,
        }

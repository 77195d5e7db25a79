"""Loading a finished (or running) run directory: sample from it, evaluate it."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from ganstack.config import ExperimentConfig
from ganstack.errors import CheckpointError, GanstackError
from ganstack.fileio import atomic_path
from ganstack.models import DataInfo, StackModel, build_model
from ganstack.train import checkpoint as ckpt
from ganstack.train.trainer import load_run_config, resolve_device
from ganstack.viz import save_grid, side_by_side, to_uint8

# Samples per chunk of :meth:`Run.iter_indexed`: chunk c holds samples c*CHUNK .. c*CHUNK+CHUNK-1
# and draws its inputs from its own generator, so sample i depends on (seed, i) alone.
SAMPLE_CHUNK = 100


def chunk_seed(seed: int, chunk: int) -> int:
    """The seed of chunk ``chunk`` of a sampling run with ``seed`` (a hash: nearby seeds and
    chunks give unrelated streams). ``chunk=-1`` seeds the inputs held fixed (``--fix``)."""
    digest = hashlib.sha256(f"ganstack-sample:{int(seed)}:{int(chunk)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def is_folder_target(path: str | Path) -> bool:
    """Whether a sample ``--out`` names a folder: it ends with a slash or is a folder."""
    text = str(path)
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


class Run:
    """A trained model with its config, loaded from a run directory."""

    #: Whether every network of the model is loaded (a run); an export
    #: (:class:`ganstack.export.Pretrained`) holds only what sampling needs.
    full_model = True

    def __init__(
        self, run_dir: str | Path, checkpoint: str | None = None, device: str = "cpu"
    ) -> None:
        self.run_dir = Path(run_dir)
        self.config: ExperimentConfig = load_run_config(self.run_dir)
        folder = self.run_dir / "checkpoints"
        # A reader: no write lock; the newest complete checkpoint, even while the run trains.
        found = ckpt.read_newest(folder, Path(checkpoint).stem if checkpoint else None)
        if found is None:
            unusable = ckpt.scan_checkpoints(folder)[1]
            if unusable:  # records there, none usable: "train it first" would mislead
                raise CheckpointError(
                    f"{self.run_dir} holds checkpoints but none of them can be read "
                    f"({unusable[-1][1]}); restore a good checkpoint into {folder}"
                )
            raise GanstackError(f"{self.run_dir} has no checkpoint yet; train it first")
        path, self.record, tensors = found
        di = self.record.get("data_info")
        if di is None or "model" not in self.record:
            raise GanstackError(
                f"{path} is not a checkpoint of a training run (it records no data_info or model)"
            )
        self.info = DataInfo(
            tuple(di["shape"]), di["num_classes"], di.get("name", ""), di.get("text_dim", 0)
        )
        self.model: StackModel = build_model(self.config.model, self.info)
        if any(k.startswith("model/ema.") for k in tensors):
            self.model.enable_ema(self.config.train.ema)
        ckpt.restore(self.record, tensors, self.model, None, rng=False)
        self.device = resolve_device(device, "--device")
        self.model.to(self.device).eval()
        self.checkpoint = path.stem

    @property
    def step(self) -> int:
        return int(self.record["global_step"])

    def encode_captions(self, captions: list[str]) -> torch.Tensor:
        """Caption embeddings with the encoder the run was trained with."""
        from ganstack.data.text import build_encoder

        if "text" not in self.model.condition_dims():
            raise GanstackError(
                f"this {self.model.name} run is not text-conditional: it takes no captions"
            )
        if not captions:
            raise GanstackError("no captions given")
        dc = self.config.data
        emb = build_encoder(dc.text_encoder, dc.text_dim, dc.text_model).encode(captions)
        if emb.shape[1] != self.info.text_dim:
            raise GanstackError(
                f"the caption encoder gives {emb.shape[1]}-d vectors, the model "
                f"was trained on {self.info.text_dim}-d ones"
            )
        return emb

    def sample(
        self,
        n: int,
        labels: Iterable[int] | None = None,
        fixed: Iterable[str] = (),
        seed: int | None = 0,
        captions: list[str] | None = None,
        conditions: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """``n`` samples: ``image`` in [0, 1] (N, C, H, W), ``y`` and every level's input.

        ``captions`` (text-conditional models): sample ``i`` gets caption ``i mod len``."""
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        conditions = dict(conditions or {})
        if captions:
            conditions["text"] = self.encode_captions(captions)
        return self.model.sample(n, labels, fixed, gen, conditions=conditions or None)

    @torch.no_grad()
    def iter_indexed(
        self,
        n: int,
        seed: int = 0,
        labels: Iterable[int] | None = None,
        fixed: Iterable[str] = (),
        captions: list[str] | None = None,
        conditions: dict[str, torch.Tensor] | None = None,
        chunk: int = SAMPLE_CHUNK,
    ) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        """Samples ``0 .. n-1`` in chunks, as ``(first index, outputs)`` pairs (CPU tensors, as
        :meth:`sample` returns), where sample ``i`` depends only on ``(seed, i)``, not on ``n``.

        Chunk ``c`` (samples ``c*chunk`` .. ``c*chunk + chunk - 1``) draws its inputs from a
        generator seeded by :func:`chunk_seed` ``(seed, c)`` and is always generated whole
        (then cut at ``n``), so that models sampling with batch statistics also give the same
        sample ``i``. Sample ``i`` has class ``labels[i mod len]`` (default ``i mod K``),
        caption ``captions[i mod len]`` and condition rows ``conditions[name][i mod len]``;
        inputs named in ``fixed`` are drawn once (from :func:`chunk_seed` ``(seed, -1)``) and
        shared by all samples."""
        if n < 0 or chunk < 1:
            raise GanstackError(f"cannot draw {n} samples in chunks of {chunk}")
        model = self.model
        conditions = dict(conditions or {})
        if captions:
            conditions["text"] = self.encode_captions(list(captions))
        label_list = None if labels is None else [int(k) for k in labels]
        if label_list is not None and not label_list:
            raise GanstackError("no labels given")
        fixed = list(fixed)
        shared: dict[str, torch.Tensor] = {}
        if fixed:
            gen = torch.Generator().manual_seed(chunk_seed(seed, -1))
            first = model.draw_inputs(
                1,
                None if label_list is None else label_list[:1],
                fixed,
                gen,
                {k: v[:1] for k, v in conditions.items()},
            )
            # With explicit labels, 'y' follows them (as Run.sample does), fixed or not.
            shared = {k: first[k] for k in fixed if not (k == "y" and label_list is not None)}
        dev = torch.device(self.device)
        rng_devices = [dev.index or 0] if dev.type == "cuda" else []
        for c in range((n + chunk - 1) // chunk):
            idx = torch.arange(c * chunk, (c + 1) * chunk)
            if label_list is not None:
                chunk_labels: list[int] | None = [
                    label_list[i % len(label_list)] for i in idx.tolist()
                ]
            elif model.conditional:
                chunk_labels = (idx % model.info.num_classes).tolist()
            else:
                chunk_labels = None
            conds = {k: v[idx % len(v)] for k, v in conditions.items()}
            cs = chunk_seed(seed, c)
            gen = torch.Generator().manual_seed(cs)
            inputs = model.draw_inputs(chunk, chunk_labels, (), gen, conds or None)
            for k, v in shared.items():
                inputs[k] = v.expand_as(inputs[k]).contiguous()
            # Anything a model draws from torch's global generator while generating is seeded
            # per chunk too; the caller's global RNG state is left as it was.
            with torch.random.fork_rng(devices=rng_devices):
                torch.manual_seed(cs)
                with model.sampling_mode():
                    out = model.generate(inputs)
            out.update(inputs)
            stop = min(chunk, n - c * chunk)
            res = {k: v[:stop].detach().float().cpu() for k, v in out.items()}
            if "y" in res:
                res["y"] = res["y"].long()
            yield c * chunk, res

    def sample_indexed(
        self,
        n: int,
        seed: int = 0,
        labels: Iterable[int] | None = None,
        fixed: Iterable[str] = (),
        captions: list[str] | None = None,
        conditions: dict[str, torch.Tensor] | None = None,
        chunk: int = SAMPLE_CHUNK,
    ) -> dict[str, torch.Tensor]:
        """``n`` samples where sample ``i`` depends only on ``(seed, i)`` (see
        :meth:`iter_indexed`): the first ``m`` of ``sample_indexed(n)`` equal
        ``sample_indexed(m)``."""
        parts = [
            out for _, out in self.iter_indexed(n, seed, labels, fixed, captions, conditions, chunk)
        ]
        if not parts:
            raise GanstackError("--n must be a positive number of samples")
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def write_sample_folder(
        self,
        folder: str | Path,
        n: int,
        seed: int = 0,
        labels: Iterable[int] | None = None,
        fixed: Iterable[str] = (),
        captions: list[str] | None = None,
        progress: bool | None = None,
    ) -> Path:
        """One PNG per sample in ``folder``: ``000000.png``, ``000001.png``, ... (the final
        image; sample ``i`` depends only on ``(seed, i)``). Each file is written to a hidden
        temporary name and renamed, so a killed run leaves no half-written PNG.
        ``progress``: show a progress bar (default: for 1000 samples or more)."""
        from PIL import Image
        from tqdm import tqdm

        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise GanstackError(f"--out {folder} is a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        width = max(6, len(str(n - 1)))
        show = n >= 1000 if progress is None else progress
        with tqdm(total=n, unit="img", desc="sampling", disable=not show) as bar:
            for start, out in self.iter_indexed(n, seed, labels, fixed, captions):
                images = to_uint8(out["image"]).permute(0, 2, 3, 1).numpy()
                if images.shape[-1] not in (1, 3, 4):
                    raise GanstackError(f"cannot write {images.shape[-1]}-channel images as PNG")
                for j, arr in enumerate(images):
                    path = folder / f"{start + j:0{width}d}.png"
                    # Renamed into place, not fsynced (an fsync per file made writing 16x
                    # slower): a kill leaves no half-written PNG, and any sample can be
                    # written again, bit for bit, from the seed.
                    with atomic_path(path, fsync=False) as tmp:
                        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(
                            tmp, format="PNG"
                        )
                bar.update(len(images))
        return folder

    def save_samples(
        self,
        path: str | Path,
        n: int,
        labels: Iterable[int] | None = None,
        fixed: Iterable[str] = (),
        seed: int | None = 0,
        captions: list[str] | None = None,
    ) -> Path:
        """Write samples as a PNG grid, an ``.npz`` (images uint8 (N, H, W, C), labels) or,
        when ``path`` ends with ``/`` or is a folder, one PNG per sample
        (:meth:`write_sample_folder`). Samples are drawn by :meth:`sample_indexed`: sample
        ``i`` is the same whatever ``n``.

        For a multi-scale model the PNG shows every scale of each sample side by side."""
        seed = 0 if seed is None else seed
        if is_folder_target(path):
            return self.write_sample_folder(path, n, seed, labels, fixed, captions)
        path = Path(path)
        if path.suffix not in (".png", ".npz"):
            raise GanstackError(
                f"--out must end in .png or .npz, or name a folder (ending with /), got {path.name}"
            )
        out = self.sample_indexed(n, seed, labels, fixed, captions)
        path.parent.mkdir(parents=True, exist_ok=True)
        names = self.model.image_outputs()
        if path.suffix == ".png" and len(names) > 1:
            save_grid(side_by_side([out[k] for k in names]), path)
        elif path.suffix == ".png":
            save_grid(out["image"], path)
        else:
            images = to_uint8(out["image"]).permute(0, 2, 3, 1).contiguous().numpy()
            arrays = {"images": images}
            for k in names[:-1]:  # coarser scales of a multi-scale model
                arrays[k] = to_uint8(out[k]).permute(0, 2, 3, 1).contiguous().numpy()
            if captions:
                arrays["captions"] = np.array([captions[i % len(captions)] for i in range(n)])
            if "y" in out:
                arrays["labels"] = out["y"].numpy().astype(np.int64)
            # A failed write (a full disk) leaves no hidden partial file. The temporary name
            # ends with .npz, or NumPy would append it.
            with atomic_path(path, suffix=".tmp.npz") as tmp:
                np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
        return path

    def evaluate(
        self,
        n: int | None = None,
        metrics: list[str] | None = None,
        inception: str | None = None,
        samples: str | None = None,
        seed: int = 0,
        ref: str = "train",
        calibrate: bool | None = None,
        device: str | None = None,
    ) -> dict:
        """Metrics of ``n`` class-balanced samples, or of a sample file (``samples``), with
        their calibration rows and, when the config names one, the bundled baseline's.

        ``ref``: what FID, KID and precision/recall compare with: ``train`` (the training
        split, default), ``eval`` (the held-out split) or a statistics file for the Inception
        metrics (pytorch-fid's ``mu``/``sigma`` npz, or ganstack's FeatureStats npz).
        ``device``: where the feature extractors run (default: the run's device)."""
        from ganstack.data import load_dataset
        from ganstack.metrics.evaluate import (
            attach_baseline,
            caption_targets,
            evaluate,
            images_from_npz,
            reference_option,
        )
        from ganstack.metrics.measures import MODEL_MEASURES

        ec = self.config.eval
        train_ds, eval_ds = load_dataset(self.config.data)
        t0 = time.perf_counter()
        extra: dict[str, torch.Tensor] = {}
        targets: dict[str, torch.Tensor] = {}
        if samples:
            images, labels = images_from_npz(samples)
            source = str(samples)
        else:
            n = n or ec.n
            conditions = None
            if "text" in self.model.condition_dims():
                # Captions of the held-out images (the training ones when none are held out).
                conditions, targets = caption_targets(eval_ds or train_ds, n, seed)
            out = self.sample(n, seed=seed, conditions=conditions)
            images, labels = to_uint8(out["image"]), out.get("y")
            extra = {k: to_uint8(out[k]) for k in self.model.image_outputs()[:-1]}
            source = f"{self.checkpoint} (step {self.step}), seed {seed}"
        names = list(metrics or ec.metrics)
        own_names = [m for m in names if m in MODEL_MEASURES]
        if own_names and not self.full_model:
            raise GanstackError(
                f"{', '.join(own_names)}: measures of the model itself may use networks an "
                f"export does not hold (it has only the sampling generator); evaluate the run "
                f"directory for these, or leave them out of --metrics"
            )
        ref_images, ref_stats, ref_label = reference_option(ref, train_ds, eval_ds)
        res = evaluate(
            images,
            labels,
            train_ds,
            eval_ds,
            names,
            inception or ec.inception,
            extra,
            targets,
            device=device or self.device,
            calibrate=ec.calibrate if calibrate is None else calibrate,
            ref_stats=ref_stats,
            ref_label=ref_label,
            ref_images=ref_images,
            model=self.model,
        )
        if ec.baseline:
            attach_baseline(res, ec.baseline)
        res["protocol"]["samples"] = source
        res["protocol"]["seconds"] = round(time.perf_counter() - t0, 1)
        res["step"] = self.step
        from ganstack.environment import environment

        res["environment"] = environment(device or self.device)
        return res


def load(run_dir: str | Path, checkpoint: str | None = None, device: str = "cpu") -> Run:
    """Load a run directory: ``ganstack.load("runs/sgan-mnist").sample(16)``; or an export
    (``ganstack export``), as :func:`ganstack.from_pretrained` does."""
    from ganstack.export import is_export, load_export

    if is_export(run_dir):
        if checkpoint:
            raise GanstackError(
                f"{run_dir} is an export: it holds one set of weights, and "
                f"--checkpoint {checkpoint} applies to run directories only"
            )
        return load_export(run_dir, device)
    return Run(run_dir, checkpoint, device)


def write_eval(run_dir: Path, result: dict) -> Path:
    path = run_dir / "eval.json"
    ckpt.atomic_write_text(path, json.dumps(result, indent=1))
    return path

"""The ``ganstack`` command line: train, sample, eval, configs, datasets."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import typing
from pathlib import Path

from ganstack.errors import GanstackError

log = logging.getLogger("ganstack")

EPILOG_TRAIN = """\
examples:
  ganstack train sgan-mnist                      # bundled config, run dir runs/sgan-mnist
  ganstack train my.yaml --out runs/exp1 train.batch_size=64 model.ent_weight=0
  ganstack train sgan-mnist --out runs/x --resume  # continue after Ctrl-C or a crash
  ganstack train sgan-mnist --out runs/ft data.name=folder data.path=imgs/ data.channels=1 \\
      train.init_from=runs/sgan-mnist   # fine-tune: start from a run's (or an export's) weights

Ctrl-C saves a checkpoint at the end of the current step and exits; --resume continues
exactly where it stopped. Overrides use dotted keys; an unknown key is an error listing the
valid ones.

data-parallel (train.batch_size is per process; docs/usage.md for several machines):
  torchrun --standalone --nproc_per_node 2 -m ganstack train sgan-mnist --out runs/ddp
"""

EPILOG_SAMPLE = """\
examples:
  ganstack sample runs/sgan-mnist --n 100 --out grid.png
  ganstack sample runs/sgan-mnist --n 5000 --out s.npz          # class-balanced labels
  ganstack sample runs/sgan-mnist --n 10 --label 7 --fix z1 --out z0.png   # vary z0 only
  ganstack sample runs/stackgan-v2-shapes --n 16 --out s.png \\
      --caption "a large green circle on a dotted background"     # text-conditional models
  ganstack sample runs/stackgan-v2-shapes --captions captions.txt --n 64 --out s.npz
  ganstack sample runs/sgan-mnist --n 5000 --out samples/   # one PNG per sample

The .npz holds `images` (uint8, N x H x W x C) and `labels` (int64, N); a multi-scale model
adds its coarser outputs (`level2`, `level1`, ...: level 0 is the image), and a text model the
`captions` used. A PNG of a multi-scale model shows every level of each sample side by side.
Sample i gets caption i mod (number of captions); a captions file has one caption per line (UTF-8).
An --out folder (ending with / or existing) gets 000000.png, 000001.png, ... (final images).
Sample i depends only on the seed and i: --n 100 gives the first 100 samples of --n 5000.
"""

EPILOG_EVAL = """\
examples:
  ganstack eval runs/sgan-mnist
  ganstack eval runs/sgan-mnist --n 5000 --metrics acc is fid kid
  ganstack eval runs/sgan-mnist --samples s.npz
  ganstack eval runs/sgan-mnist --metrics noise       # SGAN: each level's noise sensitivity
  ganstack eval runs/sgan-mnist --metrics fid_inception --inception inception-2015-12-05.pt
  ganstack eval runs/x --metrics fid_inception --inception inception.pt --ref fid_stats.npz

Each figure is printed beside its calibration at the held-out set's size: the run's first N
samples, the real held-out images (ceiling), the same blurred by 1 and 2 px (floors), the
samples against shuffled conditions (blind) and, where the config names one, the equal-time
baseline (eval.baseline). Everything is written to RUN/eval.json.

The Inception metrics need NVIDIA's TorchScript file inception-2015-12-05.pt, given by
--inception or GANSTACK_INCEPTION. It is never downloaded, and it is loaded as trusted code
(TorchScript can execute code): only use a file from a source you trust.
"""


EPILOG_FID = """\
examples:
  ganstack fid runs/sgan-mnist real.npz                 # the run's dataset classifier
  ganstack fid samples/ real/ --dataset sgan-mnist      # two folders of PNG/JPEG files
  ganstack fid s.npz fid_stats_cifar10.npz --inception inception-2015-12-05.pt

A and B are each a run directory (--n samples, class-balanced, with its held-out captions for
a text model), an .npz of uint8 images (`images` as ganstack writes, or `arr_0`), a folder of
images that share one size, or a statistics file (pytorch-fid's / TTUR's `mu`/`sigma` npz, or
ganstack's FeatureStats npz). The feature space is --inception FILE (or GANSTACK_INCEPTION),
or --dataset CONFIG's domain classifier; with neither, a run's dataset classifier when A or B
is a run, else Inception. KID needs both sets' features: it is skipped when a side is only
statistics.
"""

EPILOG_EXPORT = """\
examples:
  ganstack export runs/sgan-mnist exports/sgan-mnist
  ganstack export runs/x exports/x --checkpoint phase-joint --license cc-by-4.0 --force

DIR gets model.safetensors (the sampling generator alone: the EMA weights when the run kept
them), config.json, a README.md model card (Hugging Face Hub metadata; metrics and their
protocol from RUN/eval.json when it describes the exported step), samples.png and the run's
figures. Load it with ganstack.from_pretrained(DIR); `ganstack sample DIR` and `ganstack eval
DIR` take it like a run. DIR must be new or empty; --force replaces an earlier export, never
another folder. The export is written beside DIR and renamed into place.
"""

EPILOG_DATASET = """\
examples:
  ganstack dataset photos/ data/photos64 --resolution 64      # sub-folders become classes
  ganstack dataset cifar-10-batches-py/ data/cifar10
  ganstack dataset bedroom_train_lmdb/ data/bedroom --resolution 128 --num-images 100000
  ganstack dataset photos/ data/photos256 --resolution 256 --zip   # and stylegan2-ada's zip
  ganstack train sgan-mnist data.name=prepared data.path=data/photos64

SRC: a folder of images (labels from class sub-folders or labels.csv, as data.name=folder),
MNIST's IDX files, CIFAR-10's python batches, SVHN's train_32x32.mat, an LSUN LMDB, or a
StackGAN layout (CUB, Oxford-102, COCO; captions and embeddings kept); --format when it cannot
be told. Images are decoded in parallel (--workers) and written once into DEST as one raw
uint8 array (images.u8, N x C x H x W) with labels.npy and dataset.json (shape, classes,
source, SHA-256 of each file). A run maps that file instead of decoding images: nothing is
read until a batch needs it, and a dataset larger than memory trains. --zip also writes
stylegan2-ada's dataset.zip (PNGs + dataset.json) for other tools.

--resolution N centre-crops each image to a square and resizes it to N x N (Lanczos; the
pixels data.name=folder with data.resolution=N gives); --crop none stretches instead. DEST
must be new or empty; --force replaces an earlier prepared dataset, never another folder.
It is written beside DEST and renamed into place: a failed run leaves nothing there.
"""

EPILOG_EXPLORE = """\
examples:
  ganstack explore runs/sgan-mnist               # then open http://127.0.0.1:7860
  ganstack explore exports/stackgan-v2-shapes --port 8000

A local web page showing one sample level by level: choose the class or type a caption;
resample or hold each level's noise (z1, z0, ..., StackGAN's ca), each drawn from its own
seed; see every level's output side by side; interpolate one level's noise between
two seeds. Nothing is fetched from the internet. It listens on 127.0.0.1 only, unless --host
says otherwise (it has no authentication). Needs the `explore` extra: pip install
'ganstack[explore]'. docs/explorer.md describes each control.
"""


SEED_MAX = 2**63 - 1
SAMPLES_MAX = 10**8  # --n: a hundred million PNG files is already more than anyone needs


def _int_in(lo: int, hi: int) -> typing.Callable[[str], int]:
    """An argparse type: an integer in lo..hi (a clear one-line error otherwise)."""

    def parse(text: str) -> int:
        try:
            value = (
                int(text, 0) if text.strip().lower().startswith(("0x", "0o", "0b")) else int(text)
            )
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in {lo}..{hi:,}, got {text[:40]}")
        return value

    parse.__name__ = "integer"
    return parse


def _check_memory(run: typing.Any, n: int, flag: str = "--n") -> None:
    """Refuse ``n`` samples held in memory at once when they could not fit (half of RAM)."""
    import math

    per_sample = math.prod(run.info.shape) * 4 * (len(run.model.image_outputs()) + 2)
    from ganstack.fileio import memory_budget

    budget = memory_budget()
    if n * per_sample > budget:
        raise GanstackError(
            f"{flag} {n:,} samples of shape {tuple(run.info.shape)} need about "
            f"{n * per_sample / 2**30:,.1f} GiB in memory, more than half of this machine's; "
            f"ask for fewer (or, with `sample`, write one PNG per sample: --out DIR/)"
        )


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (no usage block), like every other user error."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"ganstack: error: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ganstack", description="Stacked GANs: train, sample, evaluate and export.")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    p.add_argument("--version", action="version", version=f"ganstack {version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter
    # -q after the command too (`ganstack train X -q`); SUPPRESS: absent, it leaves the
    # value given before the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="only warnings and errors",
    )

    def add(*a: typing.Any, **k: typing.Any) -> argparse.ArgumentParser:
        return sub.add_parser(*a, parents=[common], **k)  # type: ignore[list-item]

    t = add("train", help="train a model from a config", epilog=EPILOG_TRAIN, formatter_class=fmt)
    t.add_argument(
        "config", help="a YAML file or the name of a bundled config (`ganstack configs` lists them)"
    )
    t.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. train.batch_size=64",
    )
    t.add_argument("--out", help="run directory (default: runs/CONFIG_NAME)")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint (or start it)",
    )
    t.add_argument("--no-eval", action="store_true", help="skip the evaluation at the end")

    s = add(
        "sample",
        help="write samples as a PNG grid, an .npz or PNG files",
        epilog=EPILOG_SAMPLE,
        formatter_class=fmt,
    )
    s.add_argument("run", help="run directory, or an export (ganstack export)")
    s.add_argument(
        "--n", type=_int_in(1, SAMPLES_MAX), default=64, help="number of samples (default 64)"
    )
    s.add_argument(
        "--out",
        required=True,
        help="output: a .png grid, an .npz, or a folder (ending with /) of PNGs",
    )
    s.add_argument("--seed", type=_int_in(0, SEED_MAX), default=0, help="random seed (default 0)")
    s.add_argument(
        "--label",
        type=_int_in(0, 2**31 - 1),
        nargs="+",
        metavar="K",
        help="class(es) to sample, cycled over the samples (default: balanced)",
    )
    s.add_argument(
        "--fix",
        nargs="+",
        default=[],
        metavar="INPUT",
        help="inputs held fixed across all samples, e.g. y z1 (others vary)",
    )
    s.add_argument(
        "--caption",
        nargs="+",
        metavar="TEXT",
        help="caption(s) to condition a text model on (cycled over the samples)",
    )
    s.add_argument("--captions", metavar="FILE", help="a text file of captions, one per line")
    s.add_argument("--checkpoint", help="checkpoint name in RUN/checkpoints (default: latest)")
    s.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")

    e = add(
        "eval", help="compute metrics of a run's samples", epilog=EPILOG_EVAL, formatter_class=fmt
    )
    e.add_argument("run", help="run directory, or an export (ganstack export)")
    e.add_argument(
        "--n", type=_int_in(2, SAMPLES_MAX), help="number of samples (default: the config's eval.n)"
    )
    e.add_argument(
        "--metrics",
        nargs="+",
        metavar="M",
        help="metrics to compute (default: the config's eval.metrics)",
    )
    e.add_argument("--samples", help="evaluate this sample .npz instead of sampling")
    e.add_argument("--inception", help="NVIDIA TorchScript inception-2015-12-05.pt (trusted)")
    e.add_argument("--seed", type=_int_in(0, SEED_MAX), default=0, help="sampling seed (default 0)")
    e.add_argument("--checkpoint", help="checkpoint name (default: latest)")
    e.add_argument("--out", help="write the JSON here (default: RUN/eval.json)")
    e.add_argument(
        "--device",
        default="cpu",
        help="where to sample and run the feature extractors: cpu or cuda (default cpu)",
    )
    e.add_argument(
        "--ref",
        default="train",
        metavar="train|eval|STATS.npz",
        help="what FID/KID/precision-recall compare with: the training split "
        "(default), the held-out split, or an Inception statistics file "
        "(pytorch-fid's mu/sigma npz, or ganstack's)",
    )
    e.add_argument(
        "--no-calibrate",
        action="store_true",
        help="skip the calibration rows (real, blurred, blind) at the held-out size",
    )

    f = add(
        "fid",
        help="FID and KID between two image sets or statistics files",
        epilog=EPILOG_FID,
        formatter_class=fmt,
    )
    f.add_argument(
        "a", help="a run directory, an .npz of images or statistics, or a folder of images"
    )
    f.add_argument("b", help="the same kinds as A")
    f.add_argument(
        "--n",
        type=_int_in(2, SAMPLES_MAX),
        default=5000,
        help="samples drawn from a run (default 5000)",
    )
    f.add_argument(
        "--seed", type=_int_in(0, SEED_MAX), default=0, help="sampling seed for a run (default 0)"
    )
    f.add_argument(
        "--inception",
        help="NVIDIA TorchScript inception-2015-12-05.pt (trusted); also GANSTACK_INCEPTION",
    )
    f.add_argument(
        "--dataset",
        metavar="CONFIG",
        help="use this dataset's domain classifier as the feature space: a bundled "
        "config, a YAML file, a run directory or a dataset name",
    )
    f.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    f.add_argument("--checkpoint", help="checkpoint of a run (default: latest)")
    kid = f.add_mutually_exclusive_group()
    kid.add_argument(
        "--kid",
        dest="kid",
        action="store_true",
        default=None,
        help="require KID (an error when a side is statistics only)",
    )
    kid.add_argument("--no-kid", dest="kid", action="store_false", help="skip KID")
    f.add_argument("--json", metavar="FILE", help="also write the result as JSON here")

    x = add(
        "export",
        help="write a run's sampling generator, config and model card to a folder",
        epilog=EPILOG_EXPORT,
        formatter_class=fmt,
    )
    x.add_argument("run", help="run directory")
    x.add_argument("dir", help="the export folder (new or empty)")
    x.add_argument("--checkpoint", help="checkpoint name in RUN/checkpoints (default: latest)")
    x.add_argument("--force", action="store_true", help="replace an earlier export in DIR")
    x.add_argument(
        "--license",
        default="mit",
        metavar="ID",
        help="the weights' license in the model card (default: mit, ganstack's)",
    )
    x.add_argument(
        "--dataset",
        nargs="+",
        metavar="ID",
        help="Hub dataset ids for the model card (default: known for MNIST, CIFAR-10 and SVHN)",
    )
    x.add_argument("--name", help="the model's name in the card (default: DIR's name)")

    v = add(
        "explore",
        help="a local web page showing a trained stack level by level",
        epilog=EPILOG_EXPLORE,
        formatter_class=fmt,
    )
    v.add_argument("run", help="run directory, or an export (ganstack export)")
    v.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    v.add_argument("--port", type=_int_in(1, 65535), default=7860, help="port (default 7860)")
    v.add_argument("--checkpoint", help="checkpoint name in RUN/checkpoints (default: latest)")
    v.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    v.add_argument(
        "--threads",
        type=_int_in(0, 1024),
        default=0,
        metavar="N",
        help="torch CPU threads (default 0: torch's default; 1 is often the "
        "fastest for one small sample, and on a busy machine)",
    )

    d = add(
        "dataset",
        help="convert a dataset once into a folder that loads fast (data.name=prepared)",
        epilog=EPILOG_DATASET,
        formatter_class=fmt,
    )
    d.add_argument(
        "src",
        help="a folder of images, or a dataset's files (IDX, CIFAR-10, "
        "SVHN .mat, LSUN LMDB, StackGAN layout)",
    )
    d.add_argument("dest", help="the prepared dataset's folder (new or empty)")
    d.add_argument(
        "--format",
        default="auto",
        metavar="F",
        help="source format: auto (default), folder, mnist, cifar10, svhn, lsun, cub, oxford, coco",
    )
    d.add_argument(
        "--resolution",
        type=_int_in(0, 1 << 16),
        default=0,
        metavar="N",
        help="centre-crop and resize every image to N x N (default 0: keep the "
        "size; LSUN and StackGAN layouts: 256)",
    )
    d.add_argument(
        "--crop",
        choices=("centre", "none"),
        default="centre",
        help="centre: a centred square (default); none: stretch to N x N",
    )
    d.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        default=None,
        help="image folders: 1 (grayscale) or 3 (RGB, default)",
    )
    d.add_argument(
        "--workers",
        type=_int_in(1, 1024),
        default=None,
        metavar="N",
        help="decoding processes (default: one per CPU core)",
    )
    d.add_argument(
        "--num-images",
        type=_int_in(0, 2**62),
        default=0,
        metavar="N",
        help="convert only the first N images (default 0: all)",
    )
    d.add_argument(
        "--zip",
        action="store_true",
        help="also write stylegan2-ada's dataset.zip (PNGs + dataset.json)",
    )
    d.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out unreadable files (listed in dataset.json) instead of stopping",
    )
    d.add_argument(
        "--force", action="store_true", help="replace an earlier prepared dataset in DEST"
    )

    add("configs", help="list the bundled configs")
    add("datasets", help="list the registered datasets")
    m = add("metrics", help="list the registered metrics")
    m.set_defaults(command="metrics")
    return p


def version() -> str:
    """The installed ganstack version (package metadata, else ``ganstack.__version__``)."""
    try:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as _dist_version

        return _dist_version("ganstack")
    except PackageNotFoundError:
        import ganstack

        return ganstack.__version__


def _cmd_train(args: argparse.Namespace) -> int:
    from ganstack.config import load_config, parse_override, resolve_config_path
    from ganstack.run import write_eval
    from ganstack.train.trainer import Trainer, load_run_config

    out = Path(args.out) if args.out else Path("runs") / resolve_config_path(args.config).stem
    if args.resume and (out / "config.yaml").is_file():
        log.info("resuming %s with its saved config", out)
        cfg = load_run_config(out, args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)
    # On resume the config may differ from the checkpoint's only in the keys overridden here
    # (they are then saved to config.yaml).
    changes = [parse_override(o)[0] for o in args.overrides] if args.resume else []
    trainer = Trainer(
        cfg, out, resume=args.resume, config_changes=[".".join(keys) for keys in changes]
    )
    log.info(
        "run directory: %s (%s, %d training images, device %s)",
        out,
        cfg.model.name,
        len(trainer.train_ds),
        trainer.device,
    )
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm
    except ImportError:  # pragma: no cover
        import contextlib

        logging_redirect_tqdm = contextlib.nullcontext
    main_rank = trainer.dist.is_main
    with trainer:  # under torchrun: leaves the process group at the end
        with logging_redirect_tqdm():
            status = trainer.fit()
        figs = trainer.write_figures() if status == "done" else []
    if not main_rank:  # rank 0 reports and evaluates
        return 130 if status == "interrupted" else 0
    if status == "interrupted":
        launcher = "torchrun ... -m ganstack" if trainer.dist.enabled else "ganstack"
        print(
            f"interrupted: checkpoint saved in {out}/checkpoints; continue with "
            f"`{launcher} train {args.config} --out {out} --resume`"
        )
        return 130
    print(f"figures: {', '.join(str(p) for p in figs)}")
    if cfg.eval.at_end and not args.no_eval:
        from ganstack.run import load

        res = load(out).evaluate()
        path = write_eval(out, res)
        from ganstack.metrics.report import report

        print(report(res))
        print(f"metrics written to {path}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from ganstack.run import load

    if args.n <= 0:
        raise GanstackError("--n must be a positive number of samples")
    captions = list(args.caption or [])
    if args.captions:
        captions += read_captions_file(args.captions)
    run = load(args.run, args.checkpoint, args.device)
    from ganstack.run import is_folder_target

    if not is_folder_target(args.out):
        _check_memory(run, args.n)
    path = run.save_samples(args.out, args.n, args.label, args.fix, args.seed, captions or None)
    print(f"wrote {args.n} samples to {path}{'/' if path.is_dir() else ''}")
    return 0


def first_sentence(doc: str | None) -> str:
    """The first sentence of a docstring, on one line."""
    text = " ".join((doc or "").split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def read_captions_file(path: str) -> list[str]:
    """Captions from a UTF-8 text file, one per line (blank lines skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise GanstackError(f"cannot read captions file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise GanstackError(f"captions file {path} is not UTF-8 text") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise GanstackError(f"captions file {path} has no captions (one per line expected)")
    return lines


def _cmd_eval(args: argparse.Namespace) -> int:
    from ganstack.run import load, write_eval

    if args.n is not None and args.n < 2:
        raise GanstackError("--n must be at least 2")
    run = load(args.run, args.checkpoint, args.device)
    if not args.samples:
        _check_memory(run, args.n or run.config.eval.n)
    res = run.evaluate(
        args.n,
        args.metrics,
        args.inception,
        args.samples,
        args.seed,
        ref=args.ref,
        calibrate=False if args.no_calibrate else None,
    )
    from ganstack.metrics.report import report

    print(report(res), flush=True)  # before writing: a failed write loses no metric
    if args.out:
        from ganstack.train.checkpoint import atomic_write_text

        atomic_write_text(Path(args.out), json.dumps(res, indent=1))
        path = Path(args.out)
    else:
        path = write_eval(run.run_dir, res)
    print(f"written to {path}")
    return 0


def _cmd_fid(args: argparse.Namespace) -> int:
    from ganstack.metrics.compare import compare, format_result

    if args.n < 2:
        raise GanstackError("--n must be at least 2")
    if args.device is not None:
        from ganstack.train.trainer import resolve_device

        resolve_device(args.device, "--device")
    res = compare(
        args.a,
        args.b,
        inception=args.inception,
        dataset=args.dataset,
        device=args.device,
        n=args.n,
        seed=args.seed,
        kid=args.kid,
        checkpoint=args.checkpoint,
    )
    print(format_result(res))
    if args.json:
        from ganstack.environment import environment
        from ganstack.fileio import atomic_write_text

        res = {**res, "environment": environment(args.device)}
        atomic_write_text(Path(args.json), json.dumps(res, indent=1))
        print(f"written to {args.json}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ganstack.export import export_run

    path = export_run(
        args.run, args.dir, args.checkpoint, args.force, args.license, args.dataset, args.name
    )
    print(
        f"exported to {path}/ (model.safetensors, config.json, README.md); load it with "
        f"ganstack.from_pretrained({str(path)!r})"
    )
    return 0


def _cmd_explore(args: argparse.Namespace) -> int:
    from ganstack.explore import Explorer
    from ganstack.explore.server import require_server, serve
    from ganstack.run import load

    require_server()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    explorer = Explorer(load(args.run, args.checkpoint, args.device), args.run)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "listening on %s: anyone who can reach this machine can use the page", args.host
        )
    log.info(
        "ganstack explore: %s (%s) on http://%s:%d/ (Ctrl-C stops it)",
        args.run,
        explorer.model.name,
        args.host,
        args.port,
    )
    serve(explorer, args.host, args.port)
    return 0


def _cmd_dataset(args: argparse.Namespace) -> int:
    from ganstack.data.prepared import convert, summary

    meta = convert(
        args.src,
        args.dest,
        fmt=args.format,
        resolution=args.resolution,
        crop=args.crop,
        channels=args.channels,
        workers=args.workers,
        write_zip=args.zip,
        force=args.force,
        skip_bad=args.skip_bad,
        num_images=args.num_images,
        progress=not args.quiet,
    )
    skipped = f"; {len(meta['skipped'])} unreadable file(s) left out" if meta["skipped"] else ""
    print(
        f"wrote {args.dest}: {summary(meta)}{skipped}. Train on it with "
        f"data.name=prepared data.path={args.dest}"
    )
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    if args.command == "configs":
        from ganstack.config import bundled_configs

        items = bundled_configs()
    elif args.command == "datasets":
        from ganstack.data import DATASETS

        items = {n: "" for n in DATASETS}
    else:
        from ganstack.metrics import METRICS

        items = {n: first_sentence(METRICS.get(n).__doc__) for n in METRICS}
    width = max(len(n) for n in items)
    for name, desc in items.items():
        print(f"{name:<{width}}  {desc}".rstrip())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "train":  # overrides may come after options such as --out
        args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]
        extra = [e for e in extra if not ("=" in e and not e.startswith("-"))]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not args.command:
        parser.print_help()
        return 2
    quiet = args.quiet or os.environ.get("RANK", "0") not in ("", "0")  # torchrun: rank 0 logs
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    handlers = {
        "train": _cmd_train,
        "sample": _cmd_sample,
        "eval": _cmd_eval,
        "fid": _cmd_fid,
        "export": _cmd_export,
        "explore": _cmd_explore,
        "dataset": _cmd_dataset,
    }
    try:
        return handlers.get(args.command, _cmd_list)(args)
    except GanstackError as e:
        print(f"ganstack: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ganstack: aborted", file=sys.stderr)
        return 130
    except Exception as e:
        message = _system_error(e)
        if message is None:
            raise  # a bug: keep the traceback
        if args.command == "train":
            message += (
                " Checkpoints written before the failure are complete: fix the cause "
                "and continue with --resume."
            )
        print(f"ganstack: error: {message}", file=sys.stderr)
        return 1


def _system_error(e: Exception) -> str | None:
    """A one-line message for a failure of the system (disk full, permissions), else None."""
    if isinstance(e, OSError):
        reason = e.strerror or str(e) or type(e).__name__
        where = f" ({e.filename})" if e.filename else ""
        return f"{reason}{where} [errno {e.errno}]." if e.errno else f"{reason}{where}."
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover
        return None
    if isinstance(e, SafetensorError) and ("I/O error" in str(e) or "os error" in str(e)):
        # safetensors reports a failed write (e.g. a full disk) as its own error type.
        return f"cannot write a safetensors file: {e}."
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

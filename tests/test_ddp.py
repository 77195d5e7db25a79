"""Data-parallel training on CPU: gloo, 2 processes started by torchrun, a tiny config.

The end-to-end runs launch this file under ``torch.distributed.run``; as a script it runs the
real ``ganstack train`` command line (what ``torchrun -m ganstack train`` runs) with a little
instrumentation per rank: the batch indices it trained on, digests of its weights and optimizer
state at the end, and every write it made into the run directory. The tests then check that the
ranks agree bit for bit, that only rank 0 wrote, that the shards cover an epoch once, and that a
run stopped and resumed under 2 processes ends exactly where an unbroken one does.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ganstack.errors import GanstackError
from ganstack.train import checkpoint as ckpt
from ganstack.train import distributed

STEPS = 8  # independent 4 + joint 4
STOP_AT = 6  # the split run stops mid-way through the joint phase
TRAIN_SIZE = 250  # 300 generated digits, 50 held out
BATCH = 25  # per process: 2 x 25 = 50 divides the 250 training images, 5 steps an epoch


def _overrides(mnist_dir: Path) -> list[str]:
    # Imported here: this file also runs as a script under torchrun, outside the package.
    from .conftest import tiny_config_overrides

    # A batch that splits the data evenly over 2 ranks; Adam state carries into the joint phase.
    return tiny_config_overrides(mnist_dir, BATCH) + [
        "train.num_threads=1",
        "model.reset_optimizers=false",
    ]


def _digest(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
    return hashlib.sha256(str(t.dtype).encode() + raw).hexdigest()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(dump: Path, args: list[str], max_steps: int = 0) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(Path(__file__).resolve()),
        str(dump),
        str(max_steps),
        "train",
        *args,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)


def _dumps(folder: Path) -> list[dict]:
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in range(2)]


def _checkpoint_digests(run: Path) -> dict[str, str]:
    _, tensors = ckpt.read_checkpoint(ckpt.list_checkpoints(run / "checkpoints")[-1])
    return {k: _digest(v) for k, v in tensors.items() if k.startswith(("model/", "optim/"))}


def _metric_steps(run: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ddp_runs(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three 2-process launches: an unbroken run, and one stopped at STOP_AT then resumed."""
    root = tmp_path_factory.mktemp("ddp")
    ov = _overrides(mnist_dir)
    out = {"root": root, "straight": root / "straight", "split": root / "split"}
    runs = [
        ("straight", ["sgan-mnist", "--out", str(out["straight"]), "--no-eval", *ov], 0),
        ("split1", ["sgan-mnist", "--out", str(out["split"]), "--no-eval", *ov], STOP_AT),
        ("split2", ["sgan-mnist", "--out", str(out["split"]), "--no-eval", "--resume"], 0),
    ]
    for name, args, max_steps in runs:
        proc = _launch(root / "dumps" / name, args, max_steps)
        out[f"{name}_log"] = proc.stdout + proc.stderr  # type: ignore[assignment]
        expected_ok = max_steps == 0
        assert (proc.returncode == 0) == expected_ok, (
            f"{name}: rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return out


def test_ranks_end_bit_identical_and_match_the_checkpoint(ddp_runs):
    d0, d1 = _dumps(ddp_runs["root"] / "dumps" / "straight")
    assert (d0["rank"], d1["rank"]) == (0, 1) and d0["world"] == d1["world"] == 2
    assert d0["status"] == d1["status"] == "done"
    assert len(d0["state"]) > 20 and any(k.startswith("optim/") for k in d0["state"])
    assert d0["state"] == d1["state"]  # every weight, buffer and Adam moment
    assert _checkpoint_digests(ddp_runs["straight"]) == d0["state"]
    assert d0["rng"] != d1["rng"]  # but each rank draws its own noise


def test_only_rank0_writes_the_run_directory(ddp_runs):
    for name in ("straight", "split1", "split2"):
        d0, d1 = _dumps(ddp_runs["root"] / "dumps" / name)
        assert d1["writes"] == [], (name, d1["writes"][:5])
        assert any(p.endswith(".safetensors") for _, p in d0["writes"]), name
    run = ddp_runs["straight"]
    assert _metric_steps(run) == list(range(1, STEPS + 1))  # one line per step, not two
    for name in (
        "config.yaml",
        "run.json",
        "samples/joint-final.png",
        "figures/classes.png",
        "checkpoints/phase-joint.json",
    ):
        assert (run / name).exists(), name
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["images_per_s"] > 0 and "loss/g1_cond" in row
    assert "distributed: 2 processes (gloo), 50 images per step" in ddp_runs["straight_log"]


def test_shards_cover_each_epoch_once(ddp_runs):
    d0, d1 = _dumps(ddp_runs["root"] / "dumps" / "straight")
    per_epoch = TRAIN_SIZE // (2 * BATCH)
    seen = []
    for step in range(per_epoch):
        a, b = d0["indices"][str(step)], d1["indices"][str(step)]
        assert len(a) == len(b) == BATCH
        assert not set(a) & set(b), step  # the ranks split each global batch
        seen += a + b
    assert sorted(seen) == list(range(TRAIN_SIZE))  # together: every image once
    assert sorted(d0["indices"]) == sorted(d1["indices"]) == [str(s) for s in range(STEPS)]


def test_resume_under_two_processes_matches_an_unbroken_run(ddp_runs):
    s1, s2 = ddp_runs["root"] / "dumps" / "split1", ddp_runs["root"] / "dumps" / "split2"
    a0, a1 = _dumps(s1)
    assert a0["status"] == a1["status"] == "interrupted"
    assert sorted(a0["indices"], key=int) == [str(s) for s in range(STOP_AT)]
    b0, b1 = _dumps(s2)
    assert b0["status"] == b1["status"] == "done"
    assert sorted(b0["indices"], key=int) == [str(s) for s in range(STOP_AT, STEPS)]
    # Each rank resumed its own noise stream: bit-identical to the run that never stopped.
    straight = _dumps(ddp_runs["root"] / "dumps" / "straight")
    assert b0["state"] == b1["state"] == straight[0]["state"]
    assert [b0["rng"], b1["rng"]] == [straight[0]["rng"], straight[1]["rng"]]
    split = ddp_runs["split"]
    assert _metric_steps(split) == list(range(1, STEPS + 1))
    straight_rows = (ddp_runs["straight"] / "metrics.jsonl").read_text().splitlines()
    split_rows = (split / "metrics.jsonl").read_text().splitlines()
    losses = [
        [{k: v for k, v in json.loads(r).items() if k.startswith("loss/")} for r in rows]
        for rows in (straight_rows, split_rows)
    ]
    assert losses[0] == losses[1]
    record = json.loads(ckpt.list_checkpoints(split / "checkpoints")[-1].read_text())
    assert len(record["rng_ranks"]) == 2


def test_a_multi_scale_text_model_trains_data_parallel(tmp_path):
    """StackGAN-v2 (a text-conditional tree with 2 discriminators and EMA) under 2 processes:
    the ranks end bit-identical and each trained on its own part of every batch."""
    from .test_stackgan_v2 import TINY

    run = tmp_path / "v2"
    args = [
        "stackgan-v2-shapes",
        "--out",
        str(run),
        "--no-eval",
        *TINY,
        "train.phases.joint=3",
        "train.ema=0.9",
        "train.num_threads=1",
    ]
    proc = _launch(tmp_path / "dumps", args)
    assert proc.returncode == 0, proc.stderr[-4000:]
    d0, d1 = _dumps(tmp_path / "dumps")
    assert d0["state"] == d1["state"] and _checkpoint_digests(run) == d0["state"]
    assert any(k.startswith("model/ema.netG") for k in d0["state"])
    assert not set(d0["indices"]["0"]) & set(d1["indices"]["0"])


# --------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------


def _hook_worker(rank: int, world: int, init_file: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        used, partial, unused = nn.Linear(3, 2), nn.Linear(3, 1), nn.Linear(3, 1)
        nets = (used, partial, unused)
        params = [p for m in nets for p in m.parameters()]
        opt = torch.optim.SGD(params, lr=1.0)
        distributed.register_gradient_hooks([opt], distributed.DistContext(rank, world))
        xs = [
            torch.randn(4, 3, generator=torch.Generator().manual_seed(10 + r)) for r in range(world)
        ]

        def loss(r: int, modules: tuple[nn.Module, ...]) -> torch.Tensor:
            out = modules[0](xs[r]).pow(2).sum()
            return out + modules[1](xs[r]).sum() if r == 0 else out  # partial: rank 0 only

        expected = [torch.zeros_like(p) for p in params[:4]]
        for r in range(world):  # every rank's gradients, computed here for reference
            copies = tuple(__import__("copy").deepcopy(m) for m in nets)
            loss(r, copies).backward()
            for e, p in zip(expected, [p for m in copies[:2] for p in m.parameters()], strict=True):
                if p.grad is not None:
                    e += p.grad / world
        before = [p.detach().clone() for p in params]
        opt.zero_grad(set_to_none=True)
        loss(rank, nets).backward()
        assert (partial.weight.grad is None) == (rank != 0)
        opt.step()
        for p, e in zip(params[:4], expected, strict=True):
            torch.testing.assert_close(p.grad, e, rtol=0, atol=1e-6)
        for p, b, e in zip(params[:4], before[:4], expected, strict=True):
            torch.testing.assert_close(p.detach(), b - e, rtol=0, atol=1e-6)
        assert all(p.grad is None for p in unused.parameters())  # no rank had a gradient
        assert all(torch.equal(p, b) for p, b in zip(params[4:], before[4:], strict=True))
        # Both ranks done before either tears gloo down: a rank that destroyed its group while
        # the other was still finishing once died in gloo's threads ("terminate called without
        # an active exception", SIGABRT). Only on success: after a failed assertion the other
        # rank may never arrive.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_gradient_hook_averages_over_ranks(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_hook_worker, args=(2, str(tmp_path / "rendezvous")), nprocs=2, join=True)


def test_per_rank_rng_round_trip_and_single_process_format(tmp_path):
    m = nn.Linear(2, 2)
    torch.manual_seed(5)
    single = json.loads(ckpt.save_checkpoint(tmp_path, "a", m, {}, {"global_step": 1}).read_text())
    assert "rng_ranks" not in single  # single-process checkpoints are unchanged
    states = []
    for r in range(2):
        torch.manual_seed(100 + r)
        states.append(ckpt.rng_state())
    path = ckpt.save_checkpoint(tmp_path, "b", m, {}, {"global_step": 2}, rank_rng=states)
    record, tensors = ckpt.read_checkpoint(path)
    assert ckpt.has_rank_rng(record, 1) and not ckpt.has_rank_rng(record, 2)
    for r in range(2):
        torch.manual_seed(100 + r)
        expected = torch.rand(3)
        torch.manual_seed(0)
        ckpt.restore_rank_rng(record, tensors, r)
        assert torch.equal(torch.rand(3), expected)


def test_sync_bn_is_refused_on_cpu():
    with pytest.raises(GanstackError, match="needs CUDA"):
        distributed.convert_sync_batchnorm(nn.Sequential(nn.BatchNorm1d(2)), torch.device("cpu"))


def test_world_size_one_is_not_distributed(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    ctx, dev = distributed.init_distributed(torch.device("cpu"))
    assert not ctx.enabled and ctx.is_main and dev == torch.device("cpu")


# --------------------------------------------------------------------------------------------
# The worker torchrun starts (this file run as a script)
# --------------------------------------------------------------------------------------------


def _watch_writes(run_dir: Path, writes: list[tuple[str, str]]) -> None:
    """Record every file-system write under ``run_dir`` this process makes."""
    import builtins
    import io

    def under(path: object) -> bool:
        try:
            return Path(os.fsdecode(path)).resolve().is_relative_to(run_dir)  # type: ignore[arg-type]
        except TypeError:  # a file descriptor
            return False

    real_open = builtins.open

    def open_(file, mode="r", *a, **k):  # type: ignore[no-untyped-def]
        if any(c in mode for c in "wax+") and under(file):
            writes.append(("open", str(file)))
        return real_open(file, mode, *a, **k)

    builtins.open = io.open = open_  # type: ignore[assignment]
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def wrap(name: str, check) -> None:  # type: ignore[no-untyped-def]
        real = getattr(os, name)

        def f(*a, **k):  # type: ignore[no-untyped-def]
            path = check(*a)
            if path is not None and under(path):
                writes.append((name, str(path)))
            return real(*a, **k)

        setattr(os, name, f)

    wrap("open", lambda path, flags, *a: path if flags & write_flags else None)
    for name in ("mkdir", "unlink", "remove", "rmdir"):
        wrap(name, lambda path, *a: path)
    for name in ("replace", "rename"):
        wrap(name, lambda src, dst, *a: dst)


def _worker(argv: list[str]) -> int:
    """``test_ddp.py DUMP_DIR MAX_STEPS train ARGS...``: one rank of a torchrun launch."""
    dump, max_steps, cli_args = Path(argv[0]), int(argv[1]), argv[2:]
    from ganstack import cli
    from ganstack.train.trainer import Trainer

    rank = int(os.environ["RANK"])
    run_dir = Path(cli_args[cli_args.index("--out") + 1]).resolve()
    info: dict = {"rank": rank, "world": int(os.environ["WORLD_SIZE"]), "indices": {}, "writes": []}
    real_fit = Trainer.fit

    def fit(self: Trainer, _max_steps: int | None = None) -> str:
        real_batch = self.batcher.batch

        def batch(step: int) -> dict[str, torch.Tensor]:
            info["indices"][step] = self.batcher.indices(step).tolist()
            return real_batch(step)

        self.batcher.batch = batch  # type: ignore[method-assign]
        status = real_fit(self, max_steps or None)
        info["status"] = status
        state = {f"model/{k}": _digest(v) for k, v in self.model.state_dict().items()}
        for name, opt in self.model.optimizers.items():
            for idx, s in opt.state_dict()["state"].items():
                state.update(
                    {
                        f"optim/{name}/{idx}/{k}": _digest(v)
                        for k, v in s.items()
                        if torch.is_tensor(v)
                    }
                )
        info["state"] = state
        info["rng"] = _digest(torch.get_rng_state())
        return status

    Trainer.fit = fit  # type: ignore[method-assign]
    _watch_writes(run_dir, info["writes"])
    try:
        return cli.main(cli_args)
    finally:
        dump.mkdir(parents=True, exist_ok=True)
        (dump / f"rank{rank}.json").write_text(json.dumps(info))


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))

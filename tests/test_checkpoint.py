from __future__ import annotations

import os
import pickle

import pytest
import torch
from torch import nn

from ganstack.errors import CheckpointError
from ganstack.train import checkpoint as ckpt


def _model_and_opt(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    m(torch.randn(16, 4)).sum().backward()
    opt.step()
    return m, opt


def test_round_trip_restores_weights_optimizer_and_rng(tmp_path):
    m, opt = _model_and_opt()
    path = ckpt.save_checkpoint(tmp_path, "a", m, {"opt": opt}, {"global_step": 1})
    expected_next = torch.rand(3)  # what the RNG gives right after saving
    m2, opt2 = _model_and_opt(seed=1)
    record, tensors = ckpt.read_checkpoint(path)
    ckpt.restore(record, tensors, m2, {"opt": opt2})
    assert torch.equal(torch.rand(3), expected_next)
    for a, b in zip(m.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    for k in s1["state"]:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(s1["state"][k][key], s2["state"][k][key])
    assert s1["param_groups"] == s2["param_groups"]


def test_altered_bytes_are_detected_and_refused(tmp_path):
    m, opt = _model_and_opt()
    path = ckpt.save_checkpoint(tmp_path, "a", m, {"opt": opt}, {"global_step": 1})
    st = tmp_path / "a.safetensors"
    data = bytearray(st.read_bytes())
    data[-5] ^= 0xFF  # flip bits inside a tensor
    st.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        ckpt.read_checkpoint(path)


def test_crash_during_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    m, opt = _model_and_opt()
    ckpt.save_checkpoint(tmp_path, "step-1", m, {"opt": opt}, {"global_step": 1})
    before = (tmp_path / "step-1.safetensors").read_bytes()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", boom)
    with pytest.raises(OSError, match="No space"):
        ckpt.save_checkpoint(tmp_path, "step-2", m, {"opt": opt}, {"global_step": 2})
    monkeypatch.undo()
    # The new checkpoint does not exist, no temporary is left, the old one is intact.
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-1.json"]
    assert not list(tmp_path.glob(".*.tmp"))
    assert (tmp_path / "step-1.safetensors").read_bytes() == before
    ckpt.read_checkpoint(tmp_path / "step-1.json")


def test_weights_without_their_record_are_not_a_checkpoint(tmp_path):
    m, opt = _model_and_opt()
    ckpt.save_checkpoint(tmp_path, "step-1", m, {"opt": opt}, {"global_step": 1})
    # A kill between the two renames leaves weights with no JSON: invisible, not half-loaded.
    (tmp_path / "step-2.safetensors").write_bytes(b"partial")
    (tmp_path / ".step-3.json.123.tmp").write_text("{")
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-1.json"]
    assert ckpt.remove_leftovers(tmp_path) == 2  # the temporary and the orphaned weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-1.json", "step-1.safetensors"]
    ckpt.read_checkpoint(tmp_path / "step-1.json")


def test_a_pickle_posing_as_a_checkpoint_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    m, opt = _model_and_opt()
    path = ckpt.save_checkpoint(tmp_path, "a", m, {"opt": opt}, {"global_step": 1})
    st = tmp_path / "a.safetensors"
    st.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError):
        ckpt.read_checkpoint(path)
    with pytest.raises(CheckpointError):
        ckpt.read_checkpoint(path, verify=False)  # even unverified, it is not unpickled
    assert not marker.exists()


def test_corrupt_or_foreign_json_is_a_clear_error(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        ckpt.read_checkpoint(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="not a ganstack checkpoint"):
        ckpt.read_checkpoint(tmp_path / "y.json")
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.read_checkpoint(tmp_path / "z.json")


def test_shape_mismatch_says_config_changed(tmp_path):
    m, opt = _model_and_opt()
    path = ckpt.save_checkpoint(tmp_path, "a", m, {"opt": opt}, {"global_step": 1})
    other = nn.Sequential(nn.Linear(4, 9), nn.BatchNorm1d(9), nn.Linear(9, 2))
    record, tensors = ckpt.read_checkpoint(path)
    with pytest.raises(CheckpointError, match="config"):
        ckpt.restore(record, tensors, other)


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "f.txt"
    ckpt.atomic_write_text(p, "old")
    ckpt.atomic_write_text(p, "new")
    assert p.read_text() == "new"
    assert os.listdir(tmp_path) == ["f.txt"]

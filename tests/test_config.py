from __future__ import annotations

import pytest

from ganstack.config import ConfigError, bundled_configs, load_config, parse_override


def test_bundled_demo_config_loads_with_its_phases():
    cfg = load_config("sgan-mnist")
    assert cfg.model.name == "sgan"
    assert list(cfg.train.phases) == ["independent", "joint"]
    assert "sgan-mnist" in bundled_configs()
    assert bundled_configs()["sgan-mnist"]


def test_overrides_are_typed_and_nested():
    cfg = load_config(
        "sgan-mnist",
        [
            "train.batch_size=64",
            "model.ent_weight=0",
            "model.encoder.split=[pool2, fc3]",
            "model.z_dims=[8,8,8]",
        ],
    )
    assert cfg.train.batch_size == 64 and isinstance(cfg.train.batch_size, int)
    assert cfg.model.ent_weight == 0.0 and isinstance(cfg.model.ent_weight, float)
    assert cfg.model.encoder.split == ["pool2", "fc3"]


def test_unknown_key_lists_valid_keys_and_suggests_the_nearest():
    with pytest.raises(ConfigError) as e:
        load_config("sgan-mnist", ["train.bach_size=3"])
    msg = str(e.value)
    assert "train.bach_size" in msg and "Did you mean 'batch_size'" in msg
    assert "log_every" in msg  # the valid keys are listed


def test_unknown_model_key_and_unknown_phase():
    with pytest.raises(ConfigError, match="ent_weigth"):
        load_config("sgan-mnist", ["model.ent_weigth=1"])
    with pytest.raises(ConfigError, match="joint"):
        load_config("sgan-mnist", ["train.phases.jont=5"])


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.batch_size=abc", "expected an integer"),
        ("train.batch_size=-3", "must be > 0"),
        ("train.tensorboard=maybe", "true or false"),
        ("train.precision=fp8", "expected one of"),
        ("model.z_dims=[50]", "one noise size per level"),
        ("model.encoder.split=[fc4]", "can be cut after"),
        ("model.width=-1", r"model.width must be in \(0, 64\]"),
        ("data.eval_size=-1", ">= 0"),
        ("model.name=nosuchgan", "unknown model"),
    ],
)
def test_bad_values_get_clear_errors(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        cfg = load_config("sgan-mnist", [override])
        # Errors detected when the model is built (encoder split) count too.
        from ganstack.models import DataInfo, build_model

        build_model(cfg.model, DataInfo((1, 28, 28), 10))


def test_unknown_config_name_suggests(tmp_path):
    with pytest.raises(ConfigError, match="Did you mean 'sgan-mnist'"):
        load_config("sgan-mnst")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))


def test_parse_override_forms():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    assert parse_override("a=hello") == (["a"], "hello")
    with pytest.raises(ConfigError):
        parse_override("novalue")


def test_config_hash_changes_with_content():
    a = load_config("sgan-mnist")
    b = load_config("sgan-mnist", ["train.seed=1"])
    assert a.hash() != b.hash() and a.hash() == load_config("sgan-mnist").hash()


def test_every_bundled_config_loads():
    names = list(bundled_configs())
    assert len(names) >= 2
    for name in names:
        cfg = load_config(name)
        assert cfg.train.phases and all(v >= 0 for v in cfg.train.phases.values()), name


def test_declared_ranges_say_their_bounds():
    from ganstack.ranges import Range

    assert Range(gt=0).says(integral=True) == "> 0"
    assert Range(gt=0).says(integral=False) == "> 0 and finite"
    assert Range(ge=1, le=1 << 16).says(integral=True) == "in 1..65536"
    assert Range(gt=0, le=64.0).says(integral=False) == "in (0, 64]"
    assert Range(ge=0, note="0: never").says(integral=True) == ">= 0 (0: never)"
    assert not any(Range(ge=0).holds(v) for v in (float("nan"), float("inf"), -1))

"""Config: every shipped YAML validates; unknown keys, wrong types and bad values name the key and the file."""
from pathlib import Path

import pytest

from distsnn.config import ConfigError, load
from distsnn.config.loader import CONFIGS_DIR

SHIPPED = sorted(p.name for p in Path(CONFIGS_DIR).glob("*.yaml"))


def test_there_are_recipes():
    assert {"imagenet_sscl_r34.yaml", "imagenet_sscl_r18.yaml", "demo_sscl.yaml", "demo_ann.yaml"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_validates(name):
    cfg = load(name)
    assert cfg.run.name == Path(name).stem or cfg.run.name.startswith("demo")


def test_bare_name_resolves_and_overrides_apply():
    cfg = load("imagenet_sscl_r34", ["model.timesteps=2", "method.sscl.temperature=0.1", "run.name=x"])
    assert cfg.model.timesteps == 2 and cfg.method.sscl.temperature == 0.1 and cfg.run.name == "x"
    assert cfg.model.neuron.decay == 0.25 and cfg.model.neuron.threshold == 0.5 and cfg.model.neuron.surrogate == "rect"


def _write(tmp_path, text):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,key,why", [
    ("run: {nmae: x}\n", "run.nmae", "unknown key"),
    ("model: {neuron: {thresold: 1}}\n", "model.neuron.thresold", "unknown key"),
    ("model: {timesteps: four}\n", "model.timesteps", "integer"),
    ("model: {timesteps: 0}\n", "model.timesteps", ">= 1"),
    ("model: {neuron: {threshold: 0}}\n", "model.neuron.threshold", "> 0"),
    ("model: {neuron: {surrogate: relu}}\n", "model.neuron.surrogate", "not one of"),
    ("method: {name: distill}\n", "method.name", "not one of"),
    ("optim: {lr: -1}\n", "optim.lr", "> 0"),
    ("deepspeed: {zero_stage: 3}\n", "deepspeed.zero_stage", "<= 2"),
    ("run: {plots: 1}\n", "run.plots", "true/false"),
    ("method: {name: baseline, tcl: {layers: [stage9]}}\n", "method.tcl.layers", "subset"),
    ("data: {source: shards, val_shards: x}\n", "data.train_shards", "required"),
    ("data: {source: digits, image_size: 64, val_resize: 32}\n", "data.val_resize", ">="),
    ("method: {name: sscl}\ndata: {source: digits}\n", "teacher.weights", "teacher"),
    ("model: [1, 2]\n", "model", "mapping"),
])
def test_bad_values_name_key_and_file(tmp_path, text, key, why):
    # complete the file with a valid data/method section unless the case is about that section
    text += "" if "data:" in text else "data: {source: digits}\n"
    text += "" if "method:" in text else "method: {name: baseline}\n"
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load(path)
    msg = str(e.value)
    assert str(path) in msg and key in msg and why in msg, msg


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="model.timesteps"):
        load("demo_ann.yaml", ["model.timesteps=-2"])
    with pytest.raises(ConfigError, match="a.b=c"):
        load("demo_ann.yaml", ["model.timesteps"])
    with pytest.raises(ConfigError, match="no_such_recipe"):
        load("no_such_recipe.yaml")

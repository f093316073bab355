"""The demo's table names what each run trained, read back from the run's own config.yaml."""
import sys
from pathlib import Path

from distsnn.config.loader import load
from distsnn.train.run_dir import RunDir, read_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "launchers"))
import demo  # noqa: E402


def _write_runs(tmp_path, overrides=()):
    """The three recipes' resolved configs as the trainer writes them, read back as the demo reads them."""
    for name in demo.RUNS:
        RunDir(load(f"{name}.yaml", [f"run.out_dir={tmp_path}", *overrides]), write=True)
    return [read_config(tmp_path / name) for name in demo.RUNS]


def test_titles_name_the_shipped_recipes(tmp_path):
    teacher, baseline, sscl = demo.titles(*_write_runs(tmp_path))
    assert teacher == "ANN teacher (ann_resnet20 x0.25)"
    assert baseline == "baseline: spiking_resnet20 x0.25, T=4, mean CE"
    assert sscl == "SSCL: spiking_resnet20 x0.25 + teacher, Eq.20 at weight 1"


def test_titles_follow_an_overridden_width_and_T(tmp_path):
    teacher, baseline, sscl = demo.titles(*_write_runs(tmp_path, ["model.width_multiplier=0.125",
                                                                  "model.timesteps=2"]))
    assert teacher == "ANN teacher (ann_resnet20 x0.125)"
    assert baseline == "baseline: spiking_resnet20 x0.125, T=2, mean CE"
    assert "x0.125" in sscl

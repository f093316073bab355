"""docs/CONFIG.md is generated from the schema: the committed file must equal the generator's output."""
import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

from distsnn.config import schema
from distsnn.config.reference import REGENERATE, iter_fields, render_reference

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "CONFIG.md"


def _leaf_keys(cls, prefix=""):
    """Every leaf key of the schema, walked here independently of the generator."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _leaf_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, hints[f.name]


def test_config_md_is_up_to_date():
    assert DOC.read_text() == render_reference(), f"docs/CONFIG.md is stale: regenerate it with `{REGENERATE}`"


def test_every_schema_key_has_a_row_with_its_help_and_choices():
    text = render_reference()
    keys = list(_leaf_keys(schema.Config))
    assert [k for k, _, _ in iter_fields()] == [k for k, _, _ in keys]
    for key, f, typ in keys:
        rows = [line for line in text.splitlines() if line.startswith(f"| `{key}` |")]
        assert len(rows) == 1, f"{key}: expected one table row, found {len(rows)}"
        assert f.metadata.get("help"), f"{key}: schema field has no help text"
        help_words = f.metadata["help"].split()[:3]
        assert all(w.strip("<>") in rows[0] for w in help_words), f"{key}: help missing from {rows[0]}"
        if typing.get_origin(typ) is typing.Literal:
            assert all(f"`{c}`" in rows[0] for c in typing.get_args(typ)), f"{key}: choices missing"
        for bound in ("ge", "gt", "le", "lt"):
            if bound in f.metadata:
                assert str(f.metadata[bound]) in rows[0], f"{key}: bound {bound} missing"


def test_every_section_has_a_heading():
    text = render_reference()
    for key, _, _ in _leaf_keys(schema.Config):
        section = key.rsplit(".", 1)[0]
        assert f"## `{section}` — " in text, section


def test_module_main_prints_the_reference():
    out = subprocess.run([sys.executable, "-m", "distsnn.config.reference"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out == render_reference()

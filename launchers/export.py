#!/usr/bin/env python
"""Export a finished run: ``python launchers/export.py RUN_DIR --format nir|onnx [--out PATH]`` (docs/EXPORT.md)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from distsnn.export.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

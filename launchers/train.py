#!/usr/bin/env python
"""Train a recipe: ``deepspeed [--num_gpus N] launchers/train.py --config NAME.yaml [--set k=v] [--dry-run]``.

Also runs under ``torchrun`` or as a single plain process. See docs/CLUSTER.md.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # the deepspeed launcher does not set it (2 ranks x N threads)

from distsnn.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

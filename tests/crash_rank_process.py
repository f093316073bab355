#!/usr/bin/env python
"""``launchers/train.py`` for the crash test: the rank whose RANK is ``DISTSNN_TEST_CRASH_RANK`` SIGKILLs itself
right after optimizer step ``DISTSNN_TEST_CRASH_STEP`` (its weights updated, the next step not begun), so the
crash lands at the same point on any machine instead of wherever a watching test's signal happens to arrive."""
import os
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from distsnn.train import main  # noqa: E402
from distsnn.train.trainer import Trainer  # noqa: E402

CRASH_STEP = int(os.environ["DISTSNN_TEST_CRASH_STEP"])
CRASH_RANK = int(os.environ["DISTSNN_TEST_CRASH_RANK"])
_after_step = Trainer._after_step


def after_step(self, *args, **kwargs):
    _after_step(self, *args, **kwargs)
    if self.rank == CRASH_RANK and self.step == CRASH_STEP:
        os.kill(os.getpid(), signal.SIGKILL)


Trainer._after_step = after_step

if __name__ == "__main__":
    sys.exit(main())

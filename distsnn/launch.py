"""Starting a training job from Python (the demo, the benchmarks, the tests): the ``deepspeed`` launcher command of
this environment and a free rendezvous port."""
from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path


def free_port() -> int:
    """A free TCP port for a rendezvous, so that concurrent jobs on one machine do not collide on 29500."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deepspeed_command() -> list[str]:
    """The ``deepspeed`` launcher of this interpreter's environment (next to it, on PATH, or as a module)."""
    here = Path(sys.executable).with_name("deepspeed")
    if here.exists():
        return [str(here)]
    found = shutil.which("deepspeed")
    return [found] if found else [sys.executable, "-m", "deepspeed.launcher.runner"]

"""A stand-in rank for the entrypoint test, started by the real `deepspeed` launcher: writes
OUT/ready.<rank>, and on SIGTERM "checkpoints" (sleeps 2 s: the old launcher path would already
have moved on to the next rank), writes OUT/stopped.<rank> and exits 75 (EX_TEMPFAIL)."""
import os
import signal
import sys
import time
from pathlib import Path

out = Path(sys.argv[-1])  # deepspeed puts --local_rank=N first
rank = os.environ["RANK"]
stop = False


def on_term(signum, frame):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
(out / f"ready.{rank}").write_text(str(os.getpid()))
while not stop:
    time.sleep(0.05)
(out / f"signalled.{rank}").write_text(str(time.time()))
time.sleep(2.0)
(out / f"stopped.{rank}").write_text(str(time.time()))
sys.exit(75)

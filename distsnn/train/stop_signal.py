"""SIGTERM/SIGINT -> a flag that the ranks all-reduce every step, so all stop on the same step.

Launchers deliver the signal to ranks at different times (DeepSpeed's launcher one rank at a time), and a rank
that stopped alone would break the next collective of the others (DEPENDENCY-FACTS.md).
"""
from __future__ import annotations

import signal


class StopSignal:
    def __init__(self):
        self.requested = False
        self.signal_name = ""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, _frame):
        self.requested = True
        self.signal_name = signal.Signals(signum).name

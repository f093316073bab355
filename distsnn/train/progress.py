"""Rank 0's console: a progress bar with images/s and ETA, and a one-table summary per epoch."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    def __init__(self, total_steps: int, start_step: int, global_batch: int, enabled: bool):
        self.total, self.done, self.enabled = total_steps, start_step, enabled
        self.t0, self.start = time.time(), start_step
        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, file=sys.stdout,
                        mininterval=2.0, disable=not enabled or not sys.stdout.isatty())

    def update(self, images_per_s: float) -> None:
        self.done += 1
        self.bar.update(1)
        self.bar.set_postfix_str(f"{images_per_s:,.0f} img/s", refresh=False)

    def eta_s(self) -> float:
        rate = (self.done - self.start) / max(time.time() - self.t0, 1e-9)
        return (self.total - self.done) / rate if rate > 0 else float("nan")

    def close(self) -> None:
        self.bar.close()


class EpochSummary:
    """Accumulates per-step figures and prints one table row per epoch (the header once)."""

    def __init__(self, enabled: bool):
        self.enabled, self.header = enabled, False
        self._reset()

    def _reset(self):
        self.losses, self.ips, self.step_time, self.wait = [], [], 0.0, 0.0

    def add(self, loss: float | None, ips: float, step_time: float, data_wait: float) -> None:
        if loss is not None:
            self.losses.append(loss)
        self.ips.append(ips)
        self.step_time += step_time
        self.wait += data_wait

    def end_epoch(self, epoch: int, res: dict | None, skipped: int) -> None:
        if self.enabled and self.ips:
            if not self.header:
                print(f"{'epoch':>5} {'steps':>6} {'loss':>9} {'img/s':>9} {'wait%':>6} {'skipped':>7} "
                      f"{'top1@1':>7} {'top1@T':>7} {'top5@T':>7}", flush=True)
                self.header = True
            loss = sum(self.losses) / len(self.losses) if self.losses else float("nan")
            ips = sum(self.ips) / len(self.ips)
            wait = 100.0 * self.wait / max(self.step_time, 1e-9)
            acc = (f"{res['top1'][0]:7.2f} {res['top1'][-1]:7.2f} {res['top5'][-1]:7.2f}" if res
                   else f"{'-':>7} {'-':>7} {'-':>7}")
            print(f"{epoch:5d} {len(self.ips):6d} {loss:9.4f} {ips:9.1f} {wait:6.1f} {skipped:7d} {acc}", flush=True)
        self._reset()

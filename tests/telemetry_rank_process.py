"""A stand-in rank for the Prometheus tests: runs the real exporter and publishes steps through the
public ``Telemetry`` API until killed. The values are chosen so that several alerts trigger:
the loss grows 10 % per step (diverging), data wait is half the step time, a non-finite step is
skipped every 25 steps, the last checkpoint is a day old, and rank 1's fused LIF is not compiled.

usage: python telemetry_rank_process.py RUN RANK WORLD_SIZE   (prints the metrics URL on stdout)
"""
import sys
import time

from distsnn.config.schema import TelemetryConfig
from distsnn.telemetry import Telemetry

LAYERS = ("stage1", "stage2", "stage3", "stage4", "pooled")


def main() -> None:
    run, rank, world = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    tel = Telemetry(TelemetryConfig(base_port=0), run=run, method="sscl", rank=rank, local_rank=rank,
                    world_size=world)
    print(tel.url, flush=True)
    tel.update_eval(epoch=0, top1=[20.0, 35.0, 41.0, 44.0], top5=[50.0, 66.0, 71.0, 73.0])
    tel.update_checkpoint(duration_s=3.5, timestamp=time.time() - 86400)
    tel.update_lif_compiled(rank != 1)  # rank 1's fused LIF fell back to the eager loop
    step = 0
    while True:
        step += 1
        loss = min(1.1 ** step, 1e30)
        comps = {"total": loss, "ce": 0.5 * loss}
        for i, layer in enumerate(LAYERS):
            comps[f"nce.{layer}"] = 0.1 * loss
            comps[f"cka.{layer}"] = 0.2 + 0.1 * i
            comps[f"lambda.{layer}"] = 1.0 / (0.2 + 0.1 * i)
        tel.update_step(step=step, epoch=step // 100, total_steps=10_000, components=comps, lr=0.1,
                        images_per_s=320.0 + rank, step_time_s=0.2, data_wait_s=0.1, eta_s=1000.0 - step)
        tel.update_firing_rates({layer: 0.05 * (i + 1) for i, layer in enumerate(LAYERS)})
        if step % 25 == 0:
            tel.count_skipped_step()
        time.sleep(0.2)


if __name__ == "__main__":
    main()

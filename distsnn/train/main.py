"""``launchers/train.py``: parse, validate everything a run needs before training, then train.

Exit codes are in ``exit_codes``: a bad config, missing shards or teacher weights, or ``run.device: cuda``
without a usable GPU exit 78 before any rank trains; SIGTERM exits 75 after a checkpoint (retry and it resumes).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

import torch.distributed as dist

from distsnn.config import ConfigError, load

from . import exit_codes


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="train.py", description="Train a distsnn recipe (under deepspeed or torchrun).")
    p.add_argument("--config", required=True, help="a YAML path or a bare file name under configs/")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--dry-run", action="store_true", help="validate config, data, model and teacher; print the plan")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed
    return p.parse_args(argv)


def _preflight(cfg):
    """Everything that can be checked without training: the data set and the teacher weights file."""
    from distsnn.data import prepare_dataset

    info = prepare_dataset(cfg.data)
    if info.num_classes is not None and info.num_classes != cfg.model.num_classes:
        raise ConfigError(f"model.num_classes: {cfg.model.num_classes} but the shards have {info.num_classes} classes")
    from distsnn.data.dataset_info import check_model_input

    check_model_input(info, cfg.model, ann=cfg.method.name == "ann")
    if cfg.method.name in ("sscl", "sscl+stcl") and not os.path.isfile(os.path.expanduser(cfg.teacher.weights)):
        raise ConfigError(f"teacher.weights: {cfg.teacher.weights}: no such file (train it with method ann, "
                          "which exports <run>/model.safetensors)")
    return info


def main(argv=None) -> int:
    args = parse_args(argv)
    from .device import DeviceError, pick_device
    from .nccl_transport import log_nccl_transport
    from .trainer import DivergedError, TeacherError, Trainer, env_rank, init_distributed, stderr

    rank, world, local_rank = env_rank()
    try:
        cfg = load(args.config, args.set)
        device = pick_device(cfg.run.device, local_rank)
        info = _preflight(cfg)
    except (ConfigError, FileNotFoundError, DeviceError) as e:
        stderr(str(e))
        return exit_codes.CONFIG_ERROR
    init_distributed(device, world)
    if device.type == "cuda" and local_rank == 0:
        log_nccl_transport(rank)
    trainer = None
    try:
        trainer = Trainer(cfg, info, device, rank, world, local_rank)
        if args.dry_run:
            if rank == 0:
                print(json.dumps({"config": str(args.config), **trainer.plan(),
                                  "num_train": info.num_train, "num_val": info.num_val}, indent=1), flush=True)
            return exit_codes.OK
        return trainer.fit()
    except (ConfigError, TeacherError, FileNotFoundError) as e:
        stderr(str(e))
        return exit_codes.CONFIG_ERROR
    except DivergedError as e:
        stderr(str(e))
        return exit_codes.DIVERGED
    except Exception:
        traceback.print_exc()
        return exit_codes.FAILED
    finally:
        if trainer is not None:
            trainer.close()
        if dist.is_initialized():
            try:  # without barrier + destroy, gloo sometimes aborts at exit (DEPENDENCY-FACTS.md)
                dist.barrier()
            except Exception:
                pass
            dist.destroy_process_group()


def run() -> None:
    sys.exit(main())

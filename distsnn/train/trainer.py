"""The training loop around one DeepSpeed engine: wiring only; every part is built by its own module."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from distsnn.config import config_hash
from distsnn.data import build_train_loader, build_val_loader
from distsnn.launch import free_port
from distsnn.losses import build_objective
from distsnn.models import build_student, build_teacher, save_weights
from distsnn.models.output import ModelOutput
from distsnn.spiking.lif_fused import compiled_state as lif_compiled_state
from distsnn.telemetry import Telemetry

from . import checkpoint as ckpt
from . import exit_codes
from .compute_dtype import ConvDtypeProbe, check_compute_dtype
from .deepspeed_config import deepspeed_config, resolve_precision
from .evaluate import evaluate
from .optim import build_optimizer, build_scheduler
from .plots import plot_anytime, plot_training
from .progress import EpochSummary, Progress
from .resize import keep_global_batch
from .run_dir import RunDir
from .stop_signal import StopSignal


class TrainModule(nn.Module):
    """Student + objective (heads, embedders, CKA/Z buffers): what DeepSpeed trains and checkpoints.

    ``autocast_dtype`` (bf16 or None) is entered here, inside DeepSpeed's forward: without a ``torch_autocast``
    section in its config the engine runs the module under ``autocast(enabled=False)``, which would undo an
    autocast entered around ``engine(...)``."""

    def __init__(self, student: nn.Module, objective: nn.Module, device_type: str = "cpu",
                 autocast_dtype: torch.dtype | None = None):
        super().__init__()
        self.student, self.objective = student, objective
        self.device_type, self.autocast_dtype = device_type, autocast_dtype

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor, teacher: ModelOutput | None):
        with torch.autocast(self.device_type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            return self._forward(views, labels, teacher)

    def _forward(self, views, labels, teacher):
        if len(views) == 1:
            outs = [self.student(views[0], return_features=True)]
        else:  # both views in one pass: one BN statistic over both, as SupCon's siamese set-up does
            joint = self.student(torch.cat(views, dim=1 if views[0].dim() == 5 else 0), return_features=True)
            dim = 1 if joint.logits.dim() == 3 else 0  # [T, 2B, ...] or [2B, ...]
            n = len(views)
            outs = [ModelOutput(lg, {k: f.chunk(n, dim)[i] for k, f in joint.features.items()})
                    for i, lg in enumerate(joint.logits.chunk(n, dim))]
        return self.objective(outs, labels, teacher=teacher)


def _log(msg: str) -> None:
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(f"[distsnn] {msg}", flush=True)


class Trainer:
    def __init__(self, cfg, info, device: torch.device, rank: int, world: int, local_rank: int):
        self.cfg, self.info, self.device = cfg, info, device
        self.rank, self.world = rank, world
        self.precision = resolve_precision(cfg.deepspeed.precision, device.type)
        self.run = RunDir(cfg, write=rank == 0)
        if dist.is_initialized():
            dist.barrier()  # the run directory exists before any rank writes into it
        self.method = cfg.method.name
        self.config_hash = config_hash(cfg)  # of the config as given (a resize below adapts batch/accumulation)
        # the checkpoint to resume from, chosen now: on another world size it decides the per-rank batch
        self._resume_from = (ckpt.find_resumable(self.run.checkpoints, log=_log) if cfg.checkpoint.resume
                             else None)
        self.resize_note = ""
        if self._resume_from is not None and self._resume_from[1]["world_size"] != world:
            cfg = self.cfg = self._adapt_to_world(cfg, self._resume_from[1])
        torch.manual_seed(cfg.run.seed)  # identical initial weights on every rank
        self.student = build_student(cfg.model, ann=self.method == "ann").to(device)
        if cfg.model.sync_batchnorm and world > 1 and device.type == "cuda":
            self.student = nn.SyncBatchNorm.convert_sync_batchnorm(self.student)
        if cfg.model.channels_last and device.type == "cuda":
            self.student = self.student.to(memory_format=torch.channels_last)
        teacher_channels = None
        self.teacher = None
        if self.method in ("sscl", "sscl+stcl"):
            self.teacher = build_teacher(cfg.teacher, cfg.model).to(device)
            teacher_channels = self.teacher.feature_channels
        self.objective = build_objective(cfg.method, self.student.feature_channels, teacher_channels,
                                         info.num_train, timesteps=cfg.model.timesteps).to(device)
        self._seed_rank_streams()
        self.train_loader = build_train_loader(cfg.data, info, rank, world, cfg.run.seed,
                                               num_views=self.objective.num_views, device=device)
        self.val_loader = build_val_loader(cfg.data, info, rank, world, device)
        accum = cfg.deepspeed.grad_accum
        self.steps_per_epoch = max(1, len(self.train_loader) // accum)
        self.total_steps = self.steps_per_epoch * cfg.run.epochs
        if cfg.run.max_steps:
            self.total_steps = min(self.total_steps, cfg.run.max_steps)
        global_batch = cfg.data.batch_size * accum * world
        self.global_batch = global_batch
        lr = cfg.optim.lr * (global_batch / cfg.optim.lr_reference_batch if cfg.optim.lr_reference_batch else 1.0)
        module = TrainModule(self.student, self.objective, device.type,
                             torch.bfloat16 if self.precision == "bf16" else None)
        optimizer = build_optimizer([module], cfg.optim, lr)
        warmup = int(round(cfg.optim.warmup_epochs * self.steps_per_epoch))
        scheduler = build_scheduler(optimizer, self.total_steps, warmup, lr, cfg.optim.min_lr)
        import deepspeed  # heavy import, only where the engine is built

        if device.type == "cpu":
            # DeepSpeed JIT-compiles a shared-memory all-reduce op for CPU ranks (minutes on 2 cores, once per
            # machine); gloo does the job for CPU runs, so the op is switched off before the engine is built.
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False

        self.engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=scheduler,
                                                    config=deepspeed_config(cfg, world))
        self.telemetry = Telemetry(cfg.telemetry, run=cfg.run.name, method=self.method, rank=rank,
                                   local_rank=local_rank)
        self.stop = StopSignal()
        self.step = 0
        self.skipped = 0
        self.compute_dtype: torch.dtype | None = None  # what the first training forward really ran in

    # ---- set-up helpers -------------------------------------------------------------------------------------
    def _seed_rank_streams(self) -> None:
        seed = self.cfg.run.seed + self.rank
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)

    def _autocast(self):
        """For the teacher and evaluation, which run outside the engine (the engine's forward autocasts itself)."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def plan(self) -> dict:
        n_student = sum(p.numel() for p in self.student.parameters())
        n_heads = sum(p.numel() for p in self.objective.parameters())
        return {"world_size": self.world, "global_batch": self.global_batch, "steps_per_epoch": self.steps_per_epoch,
                "total_steps": self.total_steps, "student_parameters": n_student, "head_parameters": n_heads,
                "device": str(self.device), "precision": self.precision, "method": self.method}

    # ---- checkpoints --------------------------------------------------------------------------------------------
    def _adapt_to_world(self, cfg, manifest: dict):
        """A checkpoint of W ranks resumed on this world of W' != W: the checkpoint's global batch is kept where
        a per-rank batch and accumulation divide it (``resize.keep_global_batch``), else said plainly."""
        old_world = manifest["world_size"]
        old_batch = manifest.get("batch", cfg.data.batch_size)
        old_accum = manifest.get("grad_accum", cfg.deepspeed.grad_accum)
        plan = keep_global_batch(old_batch * old_accum * old_world, self.world, cfg.data.batch_size,
                                 cfg.deepspeed.grad_accum)
        self.resize_note = f"checkpoint written by {old_world} ranks, resumed on {self.world}: {plan.note}"
        return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, batch_size=plan.batch),
                                   deepspeed=dataclasses.replace(cfg.deepspeed, grad_accum=plan.grad_accum))

    def resume(self) -> bool:
        if self._resume_from is None:
            return False
        tag, manifest = self._resume_from
        saved_world = manifest["world_size"]
        client, data_states = ckpt.load(self.engine, self.run.checkpoints, tag, saved_world)
        if client.get("config_hash") != self.config_hash:
            _log(f"note: checkpoint {tag} was written with another config (hash {client.get('config_hash')}); "
                 f"resuming with the current one ({self.config_hash})")
        self.step, self.skipped = client["step"], client.get("skipped", 0)
        same = saved_world == self.world
        self.train_loader = build_train_loader(self.cfg.data, self.info, self.rank, self.world, self.cfg.run.seed,
                                               num_views=self.objective.num_views, device=self.device,
                                               checkpoint=data_states[self.rank] if same else None,
                                               resize_from=None if same else data_states)
        if not same:
            _log(f"{self.resize_note}; data: {self.train_loader.resize_note}")
        _log(f"resumed from {self.run.checkpoints / tag} at step {self.step} (epoch {self.train_loader.epoch})")
        return True

    def _sync_batchnorm_stats(self) -> None:
        """DeepSpeed keeps BatchNorm running statistics rank-local (DDP would broadcast them): average them over
        ranks before every evaluation and checkpoint, so every rank evaluates, and rank 0 saves, one model."""
        if self.world > 1:
            from timm.utils import distribute_bn

            distribute_bn(self.student, self.world, reduce=True)

    def save(self) -> None:
        self._sync_batchnorm_stats()
        path, seconds = ckpt.save(self.engine, self.run.checkpoints, step=self.step, epoch=self.train_loader.epoch,
                                  config_hash=self.config_hash, client_state={"skipped": self.skipped},
                                  data_state=self.train_loader.state(), keep_last=self.cfg.checkpoint.keep_last,
                                  layout={"batch": self.cfg.data.batch_size,
                                          "grad_accum": self.cfg.deepspeed.grad_accum,
                                          "zero_stage": self.cfg.deepspeed.zero_stage})
        self.telemetry.update_checkpoint(duration_s=seconds, timestamp=time.time())
        self.run.log_metrics({"kind": "checkpoint", "step": self.step, "path": str(path), "seconds": round(seconds, 3)})
        _log(f"checkpoint {path} ({seconds:.1f} s)")

    def export(self) -> Path:
        """Student weights as safetensors (inference, or a teacher for SSCL); heads are dropped."""
        path = self.run.path / "model.safetensors"
        if self.rank == 0:
            save_weights(self.student, path)
        return path

    # ---- evaluation ---------------------------------------------------------------------------------------------
    def check_teacher(self) -> None:
        if self.teacher is None or not self.cfg.teacher.check_accuracy:
            return
        res = evaluate(self.teacher, self.val_loader, 1, self._autocast, on_batch=self.telemetry.heartbeat)
        top1 = res["top1"][0]
        _log(f"teacher val top-1 {top1:.2f}% top-5 {res['top5'][0]:.2f}% on {res['num_samples']} images")
        self.run.log_metrics({"kind": "teacher_eval", "top1": top1, "top5": res["top5"][0]})
        if top1 < self.cfg.teacher.min_accuracy:
            raise TeacherError(f"teacher.weights: {self.cfg.teacher.weights}: val top-1 {top1:.2f}% is below "
                               f"teacher.min_accuracy {self.cfg.teacher.min_accuracy}%")

    def evaluate(self, epoch: int) -> dict:
        T = self.cfg.model.timesteps if self.method != "ann" else 1
        self._sync_batchnorm_stats()
        res = evaluate(self.student, self.val_loader, T, self._autocast, on_batch=self.telemetry.heartbeat)
        record = {"epoch": epoch, "step": self.step, **res}
        history = self.run.log_eval(record)
        self.telemetry.update_eval(epoch=epoch, top1=res["top1"], top5=res["top5"])
        self.telemetry.update_firing_rates(res["firing_rates"])
        if self.rank == 0 and self.cfg.run.plots:
            plot_anytime(history, self.run.path / "accuracy_vs_t.png")
            plot_training(self.run.read_metrics(), self.run.path / "training_curves.png")
        self.run.log_metrics({"kind": "eval", "epoch": epoch, "step": self.step, "top1": res["top1"],
                              "top5": res["top5"], "firing_rates": res["firing_rates"]})
        return res

    # ---- the loop -----------------------------------------------------------------------------------------------
    def _flags(self, loss: torch.Tensor) -> tuple[bool, bool]:
        """(non-finite on any rank, stop requested on any rank): one tiny all-reduce per step."""
        f = torch.stack([(~torch.isfinite(loss.detach())).float(),
                         torch.tensor(float(self.stop.requested), device=loss.device)])
        if dist.is_initialized():
            dist.all_reduce(f, op=dist.ReduceOp.MAX)
        bad, stop = f.tolist()
        return bad > 0, stop > 0

    def _grads_finite(self) -> bool:
        """ZeRO 0 applies a NaN gradient to every weight (DEPENDENCY-FACTS.md): check, agreed across ranks. At a
        gradient-accumulation boundary DeepSpeed has just all-reduced the gradients, so every rank holds the same
        values and reaches the same verdict without a collective; between boundaries they are rank-local."""
        if self.cfg.deepspeed.zero_stage > 0:
            return True  # ZeRO 1/2 skip non-finite steps themselves
        grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)
        f = (~torch.isfinite(norm)).float().reshape(1)
        if dist.is_initialized() and not self.engine.is_gradient_accumulation_boundary():
            dist.all_reduce(f, op=dist.ReduceOp.MAX)
        return f.item() == 0

    def _skip_step(self, what: str, consecutive_bad: int) -> int:
        """Count a step skipped on every rank; after run.max_bad_steps in a row, checkpoint and stop."""
        consecutive_bad += 1
        self.skipped += 1
        self.telemetry.count_skipped_step()
        _log(f"step {self.step}: {what} on some rank; step skipped on all ranks "
             f"({consecutive_bad} in a row, {self.skipped} in total)")
        if consecutive_bad >= self.cfg.run.max_bad_steps:
            self.save()
            raise DivergedError(f"{consecutive_bad} non-finite steps in a row (run.max_bad_steps = "
                                f"{self.cfg.run.max_bad_steps}); the last good state is checkpointed")
        return consecutive_bad

    def fit(self) -> int:
        cfg = self.cfg
        resumed = self.resume()
        if not resumed:
            self.check_teacher()
        _log("plan: " + ", ".join(f"{k}={v}" for k, v in self.plan().items()))
        progress = Progress(self.total_steps, self.step, self.global_batch, enabled=self.rank == 0)
        summary = EpochSummary(enabled=self.rank == 0)
        consecutive_bad = 0
        last_eval_epoch = -1
        accum = cfg.deepspeed.grad_accum
        micro = 0
        while self.step < self.total_steps:
            epoch = self.train_loader.epoch
            t_prev = time.perf_counter()
            for batch in self.train_loader:
                t_data = time.perf_counter()
                data_wait = t_data - t_prev
                teacher_out = None
                if self.teacher is not None:
                    with torch.no_grad(), self._autocast():
                        teacher_out = self.teacher(batch.views[0], return_features=True)
                if self.compute_dtype is None:
                    with ConvDtypeProbe(self.student) as probe:
                        out = self.engine(batch.views, batch.labels, teacher_out)
                    self._check_runtime(probe.dtype)
                else:
                    out = self.engine(batch.views, batch.labels, teacher_out)
                bad, stop = self._flags(out.total)
                if bad:
                    consecutive_bad = self._skip_step("non-finite loss", consecutive_bad)
                else:
                    self.engine.backward(out.total)
                    if self._grads_finite():
                        self.engine.step()
                        micro += 1
                        consecutive_bad = 0
                    else:
                        self.engine.optimizer.zero_grad()
                        consecutive_bad = self._skip_step("non-finite gradient", consecutive_bad)
                t_end = time.perf_counter()
                boundary = not bad and micro % accum == 0 and micro > 0 and consecutive_bad == 0
                if boundary:
                    self.step += 1
                    self._after_step(out, progress, summary, epoch, t_end - t_prev, data_wait)
                if stop:
                    _log(f"{self.stop.signal_name or 'stop signal'} received: every rank stops at step {self.step}")
                    self.save()
                    return exit_codes.RETRY
                if boundary and cfg.checkpoint.every_steps and self.step % cfg.checkpoint.every_steps == 0:
                    self.save()
                t_prev = time.perf_counter()  # after any checkpoint: its time is neither data wait nor step time
                if self.step >= self.total_steps:
                    break
            epoch_done = self.train_loader.pos == 0
            last = self.step >= self.total_steps
            res = None
            if last or (epoch_done and (epoch + 1) % cfg.run.eval_every_epochs == 0):
                res = self.evaluate(epoch)
                last_eval_epoch = epoch
            summary.end_epoch(epoch, res, self.skipped)
            if last or (epoch_done and (epoch + 1) % cfg.checkpoint.every_epochs == 0):
                self.save()
        if last_eval_epoch < 0:  # resumed with nothing left to train: evaluate the epoch the run ended in
            loader = self.train_loader
            self.evaluate(loader.epoch - 1 if loader.pos == 0 and loader.epoch > 0 else loader.epoch)
        progress.close()
        path = self.export()
        _log(f"done: {self.step} steps; weights exported to {path}")
        return exit_codes.OK

    def _check_runtime(self, conv_dtype: torch.dtype | None) -> None:
        """After the first forward: the precision the convolutions ran in must be the plan's (else exit 70)."""
        self.compute_dtype = conv_dtype
        check_compute_dtype(self.precision, conv_dtype)
        lif = lif_compiled_state()  # None: no fused LIF ran (ANN, reference implementation)
        _log(f"first forward: convolutions ran in {conv_dtype} (precision {self.precision})"
             + ("" if lif is None else f"; fused LIF {'compiled' if lif else 'NOT compiled (eager fallback, slow)'}"))
        self.run.log_metrics({"kind": "runtime", "step": self.step, "precision": self.precision,
                              "conv_output_dtype": str(conv_dtype).removeprefix("torch."), "lif_compiled": lif})

    def _after_step(self, out, progress, summary, epoch, step_time, data_wait):
        cfg = self.cfg
        lr = self.engine.get_lr()[0]
        ips = self.global_batch / max(step_time, 1e-9)
        progress.update(ips)
        log_now = self.step % cfg.run.log_every_steps == 0 or self.step == self.total_steps
        tel_now = self.telemetry.should_update(self.step)
        if not (log_now or tel_now):
            summary.add(None, ips, step_time, data_wait)
            return
        # one host transfer for all components, only every N steps
        names = list(out.components)
        values = torch.stack([out.components[k].float() for k in names]).tolist() if names else []
        comps = dict(zip(names, values))
        comps.setdefault("total", out.total.item())
        summary.add(comps["total"], ips, step_time, data_wait)
        eta = progress.eta_s()
        if tel_now:
            self.telemetry.update_lif_compiled(lif_compiled_state())
            self.telemetry.update_step(step=self.step, epoch=epoch, total_steps=self.total_steps, components=comps,
                                       lr=lr, images_per_s=ips, step_time_s=step_time, data_wait_s=data_wait,
                                       eta_s=eta)
        if log_now:
            self.run.log_metrics({"kind": "step", "step": self.step, "epoch": epoch, "lr": lr,
                                  "loss": comps,  # full precision: resume tests compare bit for bit
                                  "images_per_s": round(ips, 2), "step_time_s": round(step_time, 4),
                                  "data_wait_s": round(data_wait, 4), "skipped_total": self.skipped})

    def close(self) -> None:
        self.telemetry.close()


class DivergedError(RuntimeError):
    """Too many non-finite steps in a row."""


class TeacherError(ValueError):
    """The teacher is missing, mismatched or too weak to distil from."""


def env_rank() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's environment (deepspeed, torchrun) or 1 process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init_distributed(device: torch.device, world: int) -> None:
    """NCCL on GPUs, gloo on the CPU. The process group is created here (also for a single plain process, so
    DeepSpeed does not go looking for MPI); DeepSpeed then uses it as it is."""
    if dist.is_initialized():
        return
    if "MASTER_ADDR" not in os.environ:  # a plain `python launchers/train.py`: a world of one
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1",
                          LOCAL_RANK="0")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def stderr(msg: str) -> None:
    print(f"[distsnn] error: {msg}", file=sys.stderr, flush=True)


"""The run's schema: one ``kw_only`` dataclass per component, every knob a user may turn.

Each field carries ``metadata``: ``help`` (one line, rendered into docs/CONFIG.md), and optional
range checks ``ge`` / ``gt`` / ``le`` / ``lt``. Choices are ``Literal`` types. The loader
(``distsnn.config.load``) enforces all of them and names the key and the file on any error.
Defaults are the papers' settings (SSCL: LIF 0.5/0.25, rect STE, tau 0.07, T=4).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

METHODS = ("ann", "baseline", "tet", "tcl", "stcl", "sscl", "sscl+stcl")
FEATURE_LAYERS = ("stage1", "stage2", "stage3", "stage4", "pooled")


def knob(default, help: str, **checks):
    """A config field with its one-line help and optional range checks (ge, gt, le, lt)."""
    meta = {"help": help, **checks}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(kw_only=True)
class RunConfig:
    name: str = knob("demo", "run name: the run directory is <out_dir>/<name>")
    out_dir: str = knob("runs", "parent folder of run directories")
    seed: int = knob(0, "global seed; rank r uses seed + r for its own RNG streams", ge=0)
    epochs: int = knob(1, "training epochs", ge=1)
    eval_every_epochs: int = knob(1, "anytime evaluation every N epochs (and always at the end)", ge=1)
    log_every_steps: int = knob(10, "metrics.jsonl / progress update period in steps", ge=1)
    max_steps: int = knob(0, "stop after this many optimizer steps (0 = run all epochs); for smoke runs", ge=0)
    max_bad_steps: int = knob(10, "stop after this many consecutive non-finite (skipped) steps", ge=1)
    plots: bool = knob(True, "write PNG plots (training curves, accuracy vs t) at each evaluation")
    device: Literal["auto", "cuda", "cpu"] = knob("auto", "auto = a GPU when torch sees one, else the CPU (the demo); cuda = a GPU or exit 78 naming the cause (cluster recipes: no silent CPU run); cpu = the CPU even when a GPU is present")


@dataclass(kw_only=True)
class NeuronConfig:
    decay: float = knob(0.25, "membrane decay tau of Eq.2 (SSCL 0.25; TCL alpha 0.5)", ge=0.0, le=1.0)
    threshold: float = knob(0.5, "firing threshold U_th (spike when U_pre >= U_th)", gt=0.0)
    surrogate: Literal["rect", "sigmoid", "atan"] = knob("rect", "surrogate gradient (rect = SSCL Eq.21 STE)")
    surrogate_width: float = knob(1.0, "rect: window width on U; sigmoid/atan: sharpness alpha", gt=0.0)
    implementation: Literal["fast", "reference"] = knob("fast", "fast fused LIF or the plain reference loop")


@dataclass(kw_only=True)
class ModelConfig:
    name: str = knob("spiking_resnet18", "student: a registered timm name (spiking_resnet18/34/19/20, sew_resnet18/34; CIFAR stems: spiking_resnet18/34_cifar, sew_resnet18/34_cifar)")
    num_classes: int = knob(1000, "number of classes", ge=2)
    timesteps: int = knob(4, "simulation time steps T", ge=1)
    in_chans: int = knob(3, "input channels: 3 for images, 2 for event frames (ON/OFF polarity; must match the shards)", ge=1)
    width_multiplier: float = knob(1.0, "scales every channel count (1.0 = the paper's network; the CPU demo uses less)", gt=0.0)
    neuron: NeuronConfig = field(default_factory=NeuronConfig, metadata={"help": "spiking neuron"})
    sync_batchnorm: bool = knob(False, "convert BatchNorm to SyncBatchNorm across ranks (GPU only)")
    channels_last: bool = knob(False, "channels-last memory format (GPU)")
    grad_checkpointing: bool = knob(False, "recompute each stage's activations in backward: less activation memory for about one more forward (for large T or batch)")


@dataclass(kw_only=True)
class TeacherConfig:
    name: str = knob("", "teacher ANN: '' = the student's ANN counterpart (ann_<student>), or a timm name such as resnet34")
    weights: str = knob("", "local .safetensors weights (exported by a method=ann run or converted timm weights); required when a teacher is used")
    check_accuracy: bool = knob(True, "measure the teacher's val top-1 once before training and log it")
    min_accuracy: float = knob(0.0, "refuse to distil from a teacher whose val top-1 (%) is below this", ge=0.0, le=100.0)


@dataclass(kw_only=True)
class AugmentConfig:
    min_scale: float = knob(0.08, "random-resized-crop minimum area fraction (refused with pad_crop > 0)", gt=0.0, le=1.0)
    pad_crop: int = knob(0, "CIFAR crop instead of the random-resized crop: pad each side with this many black pixels, take an image_size window at a random offset (0 = random-resized crop; the CIFAR recipes use 4)", ge=0)
    cutout: int = knob(0, "Cutout (DeVries & Taylor 2017) on every train view: a cutout x cutout square at a random centre, clipped at the border, set to 0 after normalisation (0 = off)", ge=0)
    hflip: bool = knob(True, "random horizontal flip")
    color_jitter: float = knob(0.4, "brightness/contrast/saturation jitter strength of the two views (0 = off); two-view methods only (stcl, sscl+stcl), refused for the others", ge=0.0)
    grayscale_p: float = knob(0.2, "probability of random grayscale of the two views; two-view methods only (stcl, sscl+stcl), refused for the others", ge=0.0, le=1.0)
    mean: list = knob([0.485, 0.456, 0.406], "per-channel mean (0-1 scale) for normalisation")
    std: list = knob([0.229, 0.224, 0.225], "per-channel std (0-1 scale) for normalisation")


@dataclass(kw_only=True)
class DataConfig:
    source: Literal["shards", "digits", "event_digits"] = knob("shards", "'digits' = the embedded scikit-learn digits shards (built on first use); 'event_digits' = those digits recorded as DVS events (N-MNIST-style saccades, T = 4 frames of 2 x 32 x 32; model.in_chans: 2); 'shards' = your webdataset shards (image or event)")
    cache_dir: str = knob("~/.cache/distsnn", "where the embedded digits (and event digits) shards are built")
    train_shards: str = knob("", "train shards: a glob or brace pattern, e.g. /data/imagenet/train-{000000..001023}.tar")
    val_shards: str = knob("", "val shards: a glob or brace pattern")
    image_size: int = knob(224, "train crop / val crop size", ge=8)
    val_resize: int = knob(256, "val: resize shorter side to this, then centre-crop image_size", ge=8)
    batch_size: int = knob(64, "per-rank micro-batch size", ge=1)
    num_threads: int = knob(4, "DALI CPU threads per rank", ge=1)
    prefetch: int = knob(2, "DALI prefetch queue depth", ge=1)
    shuffle_buffer: int = knob(4096, "DALI reader shuffle buffer (initial_fill); shards are also pre-shuffled", ge=1)
    decode_device: Literal["auto", "cpu", "mixed"] = knob("auto", "JPEG decode: mixed (GPU) when a GPU is present under auto")
    augment: AugmentConfig = field(default_factory=AugmentConfig, metadata={"help": "train augmentation"})
    train_fraction: float = knob(1.0, "digits and event_digits only: use this fraction of the train split per class (harder task)", gt=0.0, le=1.0)


@dataclass(kw_only=True)
class TCLConfig:
    temperature: float = knob(0.07, "contrastive temperature tau (TCL Eq.7/10)", gt=0.0)
    weight: float = knob(0.5, "lambda of TCL Eq.8 (0.5) / STCL Eq.9 (5)", ge=0.0)
    supervised: bool = knob(True, "SupCon positives (same class, Eq.10); false = same image only (Eq.7)")
    layers: list = knob(["stage1", "stage2", "stage3", "pooled"], "features with a projection head and a contrastive term (deep contrastive supervision); not both the last stage and pooled (pooled is its global average: the same vector twice)")
    head: Literal["conv", "gap"] = knob("conv", "head of a stage feature: 'conv' = Contrastive Deep Supervision's stride-2 separable conv blocks (GroupNorm, not BN) to the last stage's resolution, then global average pool + MLP; 'gap' = global average pool + MLP")
    proj_hidden: int = knob(512, "projection head hidden width", ge=1)
    proj_dim: int = knob(128, "projection head output (embedding) width", ge=1)


@dataclass(kw_only=True)
class SSCLConfig:
    temperature: float = knob(0.07, "critic temperature tau (SSCL Eq.19)", gt=0.0)
    weight: float = knob(1.0, "overall multiplier of sum_l lambda_l L_NCE^l (Eq.20 uses 1)", ge=0.0)
    layers: list = knob(list(FEATURE_LAYERS), "layers with an NCE term: the 4 stage maps and the pooled feature (a 1x1 last stage IS the pooled feature: list one of them)")
    embed_dim: int = knob(128, "common embedding width D of g^S and g^A", ge=1)
    pool_grid: int = knob(2, "g^S/g^A input: each stage map average-pooled to grid x grid, flattened with time kept (>= 2: channel means would make the last stage the pooled feature)", ge=2)
    embed_time: Literal["keep", "mean"] = knob("keep", "g^S input: the whole spike train of each map, time steps side by side (S^l in R^{n x T x p}), or its firing rate (mean over T)")
    num_data: int = knob(0, "M of Eq.19: training-set size (0 = take it from the data)", ge=0)
    normalizer: Literal["estimate", "none"] = knob("estimate", "Z of the critic: 'estimate' = CRD's constant from the first batch; 'none' = literal Eq.19 (log Z = 0)")
    cka_weights: bool = knob(True, "weight layers by lambda_l = 1/CKA_l (Eq.20); false = plain NCE (Table 3 ablation)")
    cka_decay: float = knob(0.9, "CKA across mini-batches: EMA decay of the unbiased HSIC terms (Eq.9) that CKA is formed from (0.9 ~ 10 recent batches; 0 = this batch only)", ge=0.0, lt=1.0)
    cka_min: float = knob(0.05, "CKA is clamped to at least this before 1/CKA", gt=0.0, le=1.0)
    cka_estimator: Literal["auto", "gram", "moments", "local"] = knob("auto", "how the global-batch CKA's HSIC terms are computed (same value): 'gram' gathers the full maps for [n, n] Gram matrices; 'moments' all-reduces feature-space sums X'Y, X'X, Y'Y (small features only); 'auto' = moments once twice the global batch exceeds the two features' summed widths; 'local' = each rank's mini-batch, averaged (Nguyen et al.; not the global batch; for very large worlds)")


@dataclass(kw_only=True)
class MethodConfig:
    name: Literal["ann", "baseline", "tet", "tcl", "stcl", "sscl", "sscl+stcl"] = knob("sscl", "training method")
    classification: Literal["mean", "tet"] = knob("mean", "classification term for tcl/stcl/sscl: mean-over-time CE (TCL Eq.4) or TET (Eq.5)")
    tcl: TCLConfig = field(default_factory=TCLConfig, metadata={"help": "temporal contrastive terms (tcl, stcl, sscl+stcl)"})
    sscl: SSCLConfig = field(default_factory=SSCLConfig, metadata={"help": "similarity-sensitive contrastive terms (sscl, sscl+stcl)"})


@dataclass(kw_only=True)
class OptimConfig:
    lr: float = knob(0.1, "peak learning rate for a global batch of lr_reference_batch", gt=0.0)
    lr_reference_batch: int = knob(0, "scale lr linearly by global_batch / this (0 = no scaling)", ge=0)
    momentum: float = knob(0.9, "SGD momentum", ge=0.0, lt=1.0)
    nesterov: bool = knob(False, "Nesterov momentum")
    weight_decay: float = knob(5e-4, "weight decay (not applied to norms and biases)", ge=0.0)
    warmup_epochs: float = knob(0.0, "linear warm-up length in epochs", ge=0.0)
    min_lr: float = knob(0.0, "cosine schedule floor", ge=0.0)
    grad_clip: float = knob(0.0, "clip the global gradient norm to this (0 = off)", ge=0.0)


@dataclass(kw_only=True)
class DeepSpeedConfig:
    zero_stage: int = knob(0, "ZeRO stage 0, 1 or 2", ge=0, le=2)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = knob("auto", "auto = bf16 on GPU, fp32 on CPU; bf16 = torch autocast inside the engine's forward (also on CPU); fp16 is refused (no loss scaler wired in: use bf16)")
    grad_accum: int = knob(1, "gradient accumulation steps", ge=1)


@dataclass(kw_only=True)
class CheckpointConfig:
    every_epochs: int = knob(1, "checkpoint every N epochs (and at the end, on SIGTERM, on repeated non-finite steps)", ge=1)
    every_steps: int = knob(0, "also checkpoint every N steps (0 = off)", ge=0)
    keep_last: int = knob(3, "keep the last K complete checkpoints", ge=1)
    resume: bool = knob(True, "resume automatically from the newest complete checkpoint of the run")


@dataclass(kw_only=True)
class TelemetryConfig:
    enabled: bool = knob(True, "serve Prometheus /metrics from every rank")
    bind_address: str = knob("127.0.0.1", "address to bind; the pod IP (or 0.0.0.0) in Kubernetes")
    base_port: int = knob(9400, "rank's port = base_port + local_rank (0 = any free port)", ge=0, le=65535)
    update_every_steps: int = knob(10, "update gauges every N steps (values already on the host)", ge=1)


@dataclass(kw_only=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig, metadata={"help": "run identity, length, evaluation"})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "student network"})
    teacher: TeacherConfig = field(default_factory=TeacherConfig, metadata={"help": "ANN teacher (sscl, sscl+stcl)"})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "shards and DALI pipelines"})
    method: MethodConfig = field(default_factory=MethodConfig, metadata={"help": "method and loss weights"})
    optim: OptimConfig = field(default_factory=OptimConfig, metadata={"help": "SGD and schedule"})
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig, metadata={"help": "DeepSpeed engine"})
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig, metadata={"help": "checkpoints and resume"})
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig, metadata={"help": "Prometheus exporter"})

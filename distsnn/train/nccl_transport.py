"""Which network NCCL will use between nodes, logged once per node at start.

NCCL takes InfiniBand/RoCE (``NET/IB``) only when an RDMA device is visible in the pod (``/sys/class/infiniband``),
``libibverbs`` with its provider can be loaded, and neither ``NCCL_IB_DISABLE=1`` nor ``NCCL_NET=Socket`` says
otherwise; else it silently uses TCP sockets (``NET/Socket``), several times slower for the gradient all-reduce.
This module predicts the choice from what the pod has, and says why; NCCL's own verdict is its
``NCCL INFO NET/IB : Using ...`` / ``NET/Socket : Using ...`` line, printed with ``NCCL_DEBUG=INFO`` and
``NCCL_DEBUG_SUBSYS=INIT,NET`` (the Kubernetes manifests set both). docs/CLUSTER.md says how to read them.
"""
from __future__ import annotations

import ctypes.util
import os
import resource
from pathlib import Path


def rdma_devices(sys_root: str = "/sys") -> list[str]:
    """RDMA devices visible in this container (``mlx5_0``, ...)."""
    d = Path(sys_root) / "class" / "infiniband"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def expected_transport(env: dict, devices: list[str], have_verbs: bool, memlock_unlimited: bool) -> tuple[str, str]:
    """(``IB`` | ``Socket`` | the forced name, the reason) NCCL will pick between nodes, from what the pod has."""
    forced = env.get("NCCL_NET", "")
    if forced:
        return forced, f"NCCL_NET={forced} forces it"
    if env.get("NCCL_IB_DISABLE", "0") == "1":
        return "Socket", "NCCL_IB_DISABLE=1"
    if not devices:
        return "Socket", ("no RDMA device in this pod (/sys/class/infiniband is empty): TCP sockets; use the rdma "
                          "overlay on an RDMA-capable cluster (docs/CLUSTER.md)")
    if not have_verbs:
        return "Socket", f"RDMA devices {','.join(devices)} present but libibverbs cannot be found in the image"
    note = "" if memlock_unlimited else " (warning: memlock limit is not unlimited; without IPC_LOCK memory " \
                                         "registration may fail and NCCL fall back to sockets)"
    hca = env.get("NCCL_IB_HCA")
    return "IB", f"RDMA devices {','.join(devices)}" + (f", NCCL_IB_HCA={hca}" if hca else "") + note


def log_nccl_transport(rank: int) -> str:
    """Print (and return) one line: NCCL's version, the expected inter-node transport and why."""
    import torch

    try:
        version = ".".join(map(str, torch.cuda.nccl.version()))
    except Exception:  # noqa: BLE001 - a report line must not stop training
        version = "unknown"
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    name, why = expected_transport(dict(os.environ), rdma_devices(), ctypes.util.find_library("ibverbs") is not None,
                                   soft == resource.RLIM_INFINITY)
    iface = os.environ.get("NCCL_SOCKET_IFNAME", "(NCCL's choice)")
    line = (f"[distsnn] rank {rank}: NCCL {version}: inter-node transport expected {name} ({why}); "
            f"bootstrap/socket interface {iface}; NCCL's own choice: the 'NCCL INFO NET/' lines "
            f"(NCCL_DEBUG={os.environ.get('NCCL_DEBUG', 'unset')})")
    print(line, flush=True)
    return line

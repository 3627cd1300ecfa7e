"""Kernel benchmark (``nox -s kernels``): the fused ops against the unfused torch sequence.

1. ``dmsa_update`` on a 4096×4096 layer (float32): median time, and achieved bandwidth
   against the bytes that must move (read M̄, M, W; write M̄', W': 5 × 4 B per entry),
   beside the device's copy bandwidth (a 256 MiB ``copy_``, read + write). Goal on a GPU:
   ≥ 70% of the copy bandwidth.
2. One E-MSA inner iteration on ``sine-resnet``'s stack (20 layers, 100 samples, width 5):
   PyTorch eager (autograd of the augmented Hamiltonian, layer after layer, as the torch
   backend's solvers did before the closed form) against one call of ``emsa_dense_grad``
   for the whole stack. Goal on a GPU: ≥ 10× faster than eager.

Without a CUDA device, the torch rows run on the CPU (the closed form in plain torch is
the fused op's reference) and the triton and cuda rows are listed as waiting for a GPU.

    python tests/bench/kernels.py [--out results/bench/kernels.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from implementations import spec
from implementations.torch import emsa, ops

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")


def _sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def median_seconds(fn, repeat: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def copy_bandwidth() -> float:
    x = torch.empty(64 * 1024 * 1024, dtype=torch.float32, device=DEVICE)  # 256 MiB
    y = torch.empty_like(x)
    seconds = median_seconds(lambda: y.copy_(x), repeat=10)
    return 2 * x.numel() * 4 / seconds / 1e9


def kernel_modules() -> dict:
    out = {"torch (unfused)": ops}
    if CUDA:
        try:
            from implementations.triton import ops as triton_ops

            out["triton"] = triton_ops
        except ImportError:
            pass
        from implementations.cuda import ops as cuda_ops

        out["cuda"] = cuda_ops
    return out


def bench_dmsa(n: int = 4096) -> list[dict]:
    g = torch.Generator(device=DEVICE).manual_seed(0)
    m_bar, m = (torch.randn(n, n, device=DEVICE, generator=g) * 1e-3 for _ in range(2))
    w = torch.where(torch.randn(n, n, device=DEVICE, generator=g) >= 0, 1.0, -1.0)
    must_move = 5 * 4 * n * n
    rows = []
    for name, module in kernel_modules().items():
        seconds = median_seconds(
            lambda k=module: k.dmsa_update(
                m_bar, m, w, alpha=0.99, one_minus_alpha=1 - 0.99, rho=0.5, levels=2, lam=0.0
            )
        )
        rows.append({"op": "dmsa_update", "impl": name, "ms": seconds * 1e3, "GB/s": must_move / seconds / 1e9})
    return rows


def bench_emsa(layers: int = 20, samples: int = 100, width: int = 5) -> list[dict]:
    g = torch.Generator(device=DEVICE).manual_seed(0)
    w = torch.randn(layers, width, width, device=DEVICE, generator=g) * 0.3
    b = torch.randn(layers, width, device=DEVICE, generator=g) * 0.1
    stored = [torch.randn(layers, samples, width, device=DEVICE, generator=g) for _ in range(4)]
    layer = spec.ResDense(width, 0.25)

    def eager():
        for i in range(layers):
            theta = (w[i].clone().requires_grad_(True), b[i].clone().requires_grad_(True))
            h = emsa.augmented_hamiltonian(layer, theta, *(s[i] for s in stored), 1.0, 1e-3)
            torch.autograd.grad(h, theta)

    rows = [
        {"op": "E-MSA inner iteration (20 layers)", "impl": "torch eager (autograd)", "ms": median_seconds(eager) * 1e3}
    ]
    for name, module in kernel_modules().items():
        label = "torch closed form (plain ops)" if module is ops else name
        seconds = median_seconds(lambda k=module: k.emsa_dense_grad(w, b, *stored, delta=0.25, rho=1.0, reg=1e-3))
        rows.append({"op": "E-MSA inner iteration (20 layers)", "impl": label, "ms": seconds * 1e3})
    eager_ms = rows[0]["ms"]
    for r in rows:
        r["× vs eager"] = eager_ms / r["ms"]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/bench/kernels.json"))
    parser.add_argument("--quick", action="store_true", help="a 1024² layer (a rehearsal: gpu-check --dry-run)")
    args = parser.parse_args(argv)
    device = torch.cuda.get_device_name() if CUDA else "CPU (no CUDA device)"
    copy = copy_bandwidth()
    rows = bench_dmsa(1024 if args.quick else 4096) + bench_emsa()
    for r in rows:
        if "GB/s" in r:
            r["% of copy"] = 100 * r["GB/s"] / copy
    print(f"device: {device}; copy bandwidth {copy:.1f} GB/s (read + write)")
    for r in rows:
        extras = ", ".join(f"{k} {v:.3g}" for k, v in r.items() if k not in ("op", "impl", "ms"))
        print(f"  {r['op']:<36} {r['impl']:<32} {r['ms']:9.3f} ms  {extras}")
    if not CUDA:
        print("waiting for a GPU: the triton and cuda rows, and the goals (dmsa_update ≥ 70% of copy bandwidth,")
        print("fused E-MSA inner iteration ≥ 10× eager) are measured only on a CUDA device.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": device, "copy_GBps": copy, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The CUDA sources compile with nvcc for the GPUs the suite targets (sm_80: A100, sm_90:
H100), here and in CI, though no kernel can run on these machines."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

KERNELS = Path(__file__).resolve().parents[1] / "implementations" / "cuda" / "csrc" / "kernels.cu"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed on this machine")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernels_compile(tmp_path, arch):
    out = tmp_path / f"kernels_{arch}.o"
    proc = subprocess.run(
        ["nvcc", "-c", "-std=c++17", "-O3", f"-arch={arch}", str(KERNELS), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.stat().st_size > 0
    symbols = subprocess.run(["nm", str(out)], capture_output=True, text=True, check=False).stdout
    for launcher in ("msabench_dmsa_update_f32", "msabench_dmsa_update_f32_i8", "msabench_emsa_dense_grad_f32"):
        assert launcher in symbols, launcher

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


BINDING = KERNELS.with_name("binding.cpp")


def _cuda_include() -> Path | None:
    """The CUDA toolkit's include folder (cuda_runtime.h), where this machine has one."""
    for root in sorted(Path("/usr/local").glob("cuda*"), reverse=True):
        if (root / "include" / "cuda_runtime.h").is_file():
            return root / "include"
    return None


@pytest.mark.skipif(shutil.which("g++") is None or _cuda_include() is None, reason="needs g++ and CUDA's headers")
def test_binding_compiles(tmp_path):
    """The torch binding (its argument checks included) passes the C++ compiler's checks
    against this machine's torch headers. The CPU wheel ships c10's CUDA headers but not
    the one CMake generates for them (``cuda_cmake_macros.h``), so an empty stand-in is
    put on the include path; nothing is linked or run."""
    torch_ext = pytest.importorskip("torch.utils.cpp_extension")
    import sysconfig

    stub = tmp_path / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n")
    includes = [tmp_path, *torch_ext.include_paths(), sysconfig.get_paths()["include"], _cuda_include()]
    proc = subprocess.run(
        ["g++", "-std=c++17", "-fsyntax-only", "-DTORCH_EXTENSION_NAME=msabench_check"]
        + [f"-I{p}" for p in includes]
        + [str(BINDING)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

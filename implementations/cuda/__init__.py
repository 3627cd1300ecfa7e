"""CUDA C++ kernels (``csrc/kernels.cu``) behind the signatures of
``implementations.torch.ops``; compiled at first use (``ops.py``)."""

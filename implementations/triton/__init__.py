"""Triton kernels with the signatures of ``implementations.torch.ops`` (docs/design.md §2:
kernel backends swap ops, not algorithms). On a machine without a GPU they run in Triton's
interpreter (``TRITON_INTERPRET=1``), which is how the tests check them."""

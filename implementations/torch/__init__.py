"""PyTorch eager backend: ``ops`` holds the hot operations in plain torch (kernel backends
swap these), one file per algorithm builds its Trainer."""

"""Torch device set-up shared by encoding and decoding: reproducible arithmetic first.

A stream must decode to the frames its encoder measured, and the same input, options and
seed must give the same bytes on the same kind of GPU. On CUDA that takes deterministic
kernels (PyTorch raises on any op without one, rather than silently varying), cuDNN's
autotuner off (it may pick a different algorithm per run), a fixed cuBLAS workspace, and
TF32 off (full fp32 products, so GPU and CPU renders agree to rounding). The cost of each
is recorded in docs/method.md ("Training engine").
"""

from __future__ import annotations

import os

import torch


def prepare(device: str | torch.device) -> torch.device:
    """The torch.device for `device`, with reproducible arithmetic switched on."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!s}: CUDA is not available on this machine")
        # cuBLAS reads this when it creates its handle: it must be set before the first
        # matrix product. Not configuration: a requirement of deterministic cuBLAS.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return dev


def memory_format(dev: torch.device) -> torch.memory_format:
    """Channels-last on the CPU: oneDNN runs these narrow convolutions 2-5x faster in NHWC
    (measured in docs/method.md); contiguous NCHW on CUDA, where cuDNN's fp32 kernels
    for few channels gain nothing from it."""
    return torch.channels_last if dev.type == "cpu" else torch.contiguous_format

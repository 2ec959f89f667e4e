"""Adam for the codec's few big tensors, without torch.optim around the fused kernel."""

from __future__ import annotations

import torch


class FusedAdam:
    """Adam on one flat tensor through the fused kernel torch.optim.Adam(fused=True) runs
    (`torch._fused_adam_`), without the Optimizer class around it: constructing a
    torch.optim optimizer imports torch._dynamo (measured 1.3 s of start-up on this CPU,
    about 5 s on a GPU image without bytecode caches), and the step needs none of its
    machinery. The update is bit-identical to torch.optim.Adam(fused=True)
    (tests/core/codec/test_fit.py). Capturable: the step count lives on the device."""

    def __init__(self, param: torch.Tensor, lr: torch.Tensor) -> None:
        self.param, self.lr = param, lr
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.count = torch.zeros((), dtype=torch.float32, device=param.device)

    def step(self) -> None:
        grad = self.param.grad
        assert grad is not None
        self.count.add_(1)
        torch._fused_adam_(
            [self.param], [grad], [self.exp_avg], [self.exp_avg_sq], [], [self.count],
            amsgrad=False, lr=self.lr, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8,
            maximize=False, grad_scale=None, found_inf=None,
        )  # fmt: skip

    def zero_grad(self) -> None:
        self.param.grad = None

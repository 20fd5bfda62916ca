"""A trained ml2o optimizer as a torch.optim.Optimizer (CPU float32 tensors).

    opt = ml2o.torch.L2O(model.parameters(), weights="ml2o.params")
    loss.backward(); opt.step(); opt.zero_grad()

CUDA tensors are refused: the engine's device kernels are not reachable from Python yet (move the
model to the CPU, or see docs/python.md).
"""
import os

import numpy as np
import torch

from . import LearnedOptimizer, _core

__all__ = ["L2O"]


def _learned(weights):
    if isinstance(weights, LearnedOptimizer):
        return weights
    if isinstance(weights, (str, os.PathLike)):
        return LearnedOptimizer.load(weights)
    raise TypeError(f"weights: expected a params path or an ml2o.LearnedOptimizer, got {type(weights).__name__}")


def _check(p, what):
    if p.device.type != "cpu":
        raise ValueError(f"{what}: tensor on {p.device}; ml2o.torch.L2O supports CPU tensors only "
                         "(the engine's CUDA kernels are not exposed to Python)")
    if p.dtype != torch.float32:
        raise ValueError(f"{what}: dtype {p.dtype}; ml2o.torch.L2O needs torch.float32")
    if not p.is_contiguous():
        raise ValueError(f"{what}: the tensor is not contiguous")
    if p.is_sparse:
        raise ValueError(f"{what}: sparse tensors are not supported")


class L2O(torch.optim.Optimizer):
    """Applies a learned optimizer (ml2o.params) to every parameter, coordinate by coordinate.

    The state of a parameter is its step count and a float32 tensor [numel, 82] of recurrent state;
    state_dict() holds them and the learned weights, so load_state_dict() resumes exactly.
    """

    def __init__(self, params, weights="ml2o.params"):
        self._opt = _learned(weights)
        super().__init__(params, {})
        for group in self.param_groups:
            for i, p in enumerate(group["params"]):
                _check(p, f"parameter {i}")

    @property
    def learned(self):
        """The ml2o.LearnedOptimizer whose weights this applies."""
        return self._opt

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                _check(p, f"parameter {i}")
                _check(p.grad, f"gradient of parameter {i}")
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["coord"] = torch.zeros(p.numel(), _core.COORD_STATE_FLOATS, dtype=torch.float32)
                st["step"] += 1
                _core.step(self._opt._w, p.detach().numpy(), p.grad.detach().numpy(),
                           st["coord"].numpy(), st["step"])
        return loss

    def state_dict(self):
        sd = super().state_dict()
        sd["ml2o_weights"] = self._opt._w.to_bytes()
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        blob = state_dict.pop("ml2o_weights", None)
        if blob is not None:
            self._opt = LearnedOptimizer(_core.Weights.from_bytes(blob, "state_dict['ml2o_weights']"))
        super().load_state_dict(state_dict)
        for st in self.state.values():
            if "coord" in st:
                st["coord"] = st["coord"].to(dtype=torch.float32).contiguous()

    def adapt(self, closure, K=5, lr=1e-3, unroll=20, trajectory=100):
        """K adaptation steps of the learned weights on this model's problem, from its current
        parameters (M-L2O's test-time adaptation; see LearnedOptimizer.adapt). closure() must
        compute the loss and call backward() on it (gradients are zeroed before each call). The
        parameters are restored and the optimizer state cleared afterwards; returns self."""
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in enumerate(params):
            _check(p, f"parameter {i}")
        sizes = [p.numel() for p in params]
        with torch.no_grad():
            x0 = torch.cat([p.detach().reshape(-1) for p in params]).numpy().copy()

        def load(x):
            with torch.no_grad():
                start = 0
                for p, n in zip(params, sizes):
                    p.copy_(torch.from_numpy(x[start:start + n]).view_as(p))
                    start += n

        def objective(x):
            load(x)
            for p in params:
                p.grad = None
            with torch.enable_grad():
                loss = closure()
            grads = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel()) for p in params]
            return float(loss), torch.cat(grads).detach().numpy().astype(np.float32)

        try:
            self._opt = self._opt.adapt(objective, x0, K=K, lr=lr, unroll=unroll, trajectory=trajectory)
        finally:
            load(x0)
            for p in params:
                p.grad = None
        self.state.clear()
        return self

"""Noise injection (file 004: "add noise to the training set, to the weights, and (suitably) shuffle labels").

- On inputs: :func:`gaussian_noise` and the batch transform :class:`GaussianNoise` (Bishop, 1995: training
  with input noise is akin to Tikhonov regularization).
- On weights: :class:`WeightNoise`, a module wrapper that runs the forward pass with perturbed weights in
  training mode (the gradient reaches the unperturbed weights), and :func:`perturbed_weights`, a context
  manager that perturbs a model's weights in place and restores them bit for bit (Graves, 2011; An, 1996).
- On labels: :func:`label_noise` replaces a seeded fraction of the labels by random ones or shuffles them
  (Zhang et al., 2017, "Understanding deep learning requires rethinking generalization").

Randomness comes from the ``generator`` argument when given (a ``torch.Generator``), otherwise from torch's
global RNG (which :class:`optreg.train.Trainer` seeds).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call

from optreg._checks import check_choice, check_int, check_nonneg, check_range
from optreg.errors import OptregTypeError, OptregValueError
from optreg.regularize.penalties import Include, _check_include, select_parameters

__all__ = ["GaussianNoise", "WeightNoise", "gaussian_noise", "label_noise", "perturbed_weights"]


def _normal_like(x: Tensor, std: float, generator: torch.Generator | None) -> Tensor:
    """``std * N(0, 1)`` noise of ``x``'s shape, dtype and device, drawn on the generator's device (``x``'s
    without one) and moved to ``x``'s, as :mod:`optreg.data.augment` does: a trainer's CPU generator
    serves a batch on an accelerator."""
    device = x.device if generator is None else generator.device
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device).mul_(std)


def gaussian_noise(x: Tensor, std: float, *, generator: torch.Generator | None = None) -> Tensor:
    """``x + std * eps`` with ``eps ~ N(0, I)`` (a new tensor; ``x`` is left alone)."""
    std = check_nonneg("gaussian_noise", "std", std)
    if not x.is_floating_point():
        raise OptregTypeError(f"gaussian_noise: x must be a floating-point tensor, got {x.dtype}")
    return x + _normal_like(x, std, generator)


@dataclass(frozen=True)
class GaussianNoise:
    """A batch transform ``(x, y, generator=None) -> (x + std * eps, y)``: Gaussian noise on the inputs only.

    Apply it to training batches (never to validation or test data). Picklable and printable.
    """

    std: float
    _owner: ClassVar[str] = "gaussian_noise"

    def __post_init__(self) -> None:
        object.__setattr__(self, "std", check_nonneg(self._owner, "std", self.std))

    def __call__(self, x: Tensor, y: Any, generator: torch.Generator | None = None) -> tuple[Tensor, Any]:
        return gaussian_noise(x, self.std, generator=generator), y


class WeightNoise(nn.Module):
    """Wraps ``module``: in training mode its forward pass uses ``theta + std * eps``, ``eps ~ N(0, I)`` drawn
    afresh per call, for the parameters ``include`` selects (the weights by default, as for the penalties).

    The perturbation is added inside the graph (:func:`torch.func.functional_call`), so the gradient is that of
    the loss at the perturbed point with respect to the *unperturbed* parameters, which is what the optimizer
    updates. In evaluation mode the forward pass is ``module``'s own. The wrapped module's parameters are this
    module's (``.module``); a state dict has the ``module.`` prefix.
    """

    def __init__(
        self,
        module: nn.Module,
        std: float,
        *,
        include: Include = "weights",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise OptregTypeError(f"weight_noise: module must be an nn.Module, got {type(module).__name__}")
        self.module = module
        self.std = check_nonneg("weight_noise", "std", std)
        self.include = _check_include("weight_noise", include)
        self.generator = generator

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.training or self.std == 0.0:
            return self.module(*args, **kwargs)
        chosen = {id(p) for p in select_parameters("weight_noise", self.module, self.include)}
        params = {
            name: p + _normal_like(p, self.std, self.generator) if id(p) in chosen else p
            for name, p in self.module.named_parameters()
        }
        return functional_call(self.module, params, args, kwargs)

    def extra_repr(self) -> str:
        return f"std={self.std:g}"


@contextmanager
def perturbed_weights(
    model: nn.Module | Iterable[Tensor],
    std: float,
    *,
    include: Include = "weights",
    generator: torch.Generator | None = None,
) -> Iterator[list[Tensor]]:
    """Within the block the selected weights are ``theta + std * eps`` (in place); on exit (also after an
    exception) they are ``theta`` again, bit for bit. Yields the noise tensors, in parameter order.

    A forward and backward pass inside the block leaves the gradient at the perturbed point in ``.grad``; step
    the optimizer *after* the block so the update applies to the unperturbed weights::

        with perturbed_weights(model, 0.01):
            loss_fn(model(x), y).backward()
        optimizer.step()
    """
    std = check_nonneg("perturbed_weights", "std", std)
    params = select_parameters("perturbed_weights", model, _check_include("perturbed_weights", include))
    saved = [p.detach().clone() for p in params]
    noise = [_normal_like(p, std, generator) for p in params]
    try:
        with torch.no_grad():
            for p, e in zip(params, noise):
                p.add_(e)
        yield noise
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)


LABEL_NOISE_MODES = ("uniform", "other", "shuffle")


def label_noise(
    y: Tensor,
    fraction: float,
    *,
    num_classes: int | None = None,
    mode: str = "uniform",
    generator: torch.Generator | None = None,
) -> Tensor:
    """A copy of the integer labels ``y`` with ``round(fraction * N)`` of them, chosen at random, corrupted.

    ``mode="uniform"``: each chosen label is replaced by a class drawn uniformly from ``K`` (it may draw the
    original; Zhang et al., 2017); ``"other"``: by a class drawn uniformly from the ``K - 1`` others (exactly
    that many labels end up wrong); ``"shuffle"``: the chosen labels are permuted among themselves (file 004's
    shuffled labels; the class frequencies are kept, ``fraction=1`` shuffles them all). ``num_classes``
    defaults to ``y.max() + 1``. Seeded by ``generator``: the same generator state gives the same labels.
    """
    owner = "label_noise"
    fraction = check_range(owner, "fraction", fraction, 0.0, 1.0)
    check_choice(owner, "mode", mode, LABEL_NOISE_MODES)
    if not isinstance(y, Tensor) or y.ndim != 1 or y.is_floating_point() or y.is_complex():
        raise OptregTypeError(f"{owner}: y must be a 1-d tensor of integer labels, got {y!r:.80}")
    n = y.shape[0]
    if num_classes is None:
        num_classes = int(y.max()) + 1 if n else 1
    k = check_int(owner, "num_classes", num_classes, 1)
    if n and (int(y.min()) < 0 or int(y.max()) >= k):
        raise OptregValueError(f"{owner}: labels must be in [0, {k}), got values in [{int(y.min())}, {int(y.max())}]")
    if mode == "other" and k < 2:
        raise OptregValueError(f"{owner}: mode 'other' needs num_classes >= 2, got {k}")
    chosen = torch.randperm(n, generator=generator)[: round(fraction * n)].to(y.device)
    out = y.clone()
    m = chosen.shape[0]
    if mode == "uniform":
        out[chosen] = torch.randint(0, k, (m,), generator=generator).to(y)
    elif mode == "other":
        shift = torch.randint(1, k, (m,), generator=generator).to(y)
        out[chosen] = (y[chosen] + shift) % k
    else:
        out[chosen] = y[chosen[torch.randperm(m, generator=generator).to(y.device)]]
    return out

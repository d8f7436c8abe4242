r"""Data augmentation (section 7.7.5): random rotations, flips, shifts, zooms and noise, seeded and composable.

The chapter's list for images (7.7.5): rotation (旋转) by a random angle, flip (翻转) along the horizontal or
vertical axis, zoom in / out (缩放) by a random factor, shift (平移) along either axis, and added noise (加噪声).
For 1-D signals (MNIST-1D; Greydanus 2020, "Scaling down deep learning", whose generator itself shifts,
scales and adds noise to its templates) the same ideas are a shift in time, a stretch (time scaling) and
noise.

Every transform is a small frozen dataclass (printable, picklable, compared by value, checked on
construction) called as ``transform(x, generator=None) -> x``:

- ``x`` is a batch: images ``(N, C, H, W)`` or ``(N, H, W)`` (digits ``(N, 1, 8, 8)``, IDX images), or
  signals ``(N, L)`` or ``(N, C, L)`` (MNIST-1D ``(N, 1, 40)``), a floating-point tensor; the output has
  the same shape, dtype and device, and ``x`` is not modified.
- Each example gets its own random parameters; all of them are drawn in one vectorized call from
  ``generator`` (a ``torch.Generator``; ``None`` uses torch's global RNG), so the same generator state
  gives the same batch. An example is transformed with probability ``p`` and left exactly as it is
  otherwise.
- ``transform.sample(x, generator)`` draws the parameters (a dict of tensors, one row per example:
  ``"apply"``, and e.g. ``"angle"`` in degrees) and ``transform.apply(x, params)`` applies them;
  ``transform(x, generator)`` is ``apply(x, sample(x, generator))``.

The geometric transforms are one affine resampling each, by torch's kernels: ``F.affine_grid`` and
``F.grid_sample`` (``align_corners=False``: pixel centres, rotation and zoom about the image centre, so a
rotation by 90 degrees is ``torch.rot90`` up to rounding), for signals on an ``(N, C, 1, L)`` view.
With output pixel :math:`p` (x to the right, y down, relative to the centre), rotation angle :math:`a`
(counterclockwise), zoom :math:`z` and shift :math:`s` (pixels), the output is

.. math::  y(p) = x\big(R(a)\,(p - s) / z\big), \qquad
           R(a) = \begin{pmatrix}\cos a & -\sin a\\ \sin a & \cos a\end{pmatrix}

(bilinear interpolation; points outside the input read the padding, zeros by default). Integer shifts
are whole-pixel moves and are resampled with ``mode="nearest"``, which makes them exact. The grid and the
resampling are computed in float64 and the result cast back to the input's dtype, so a map that sends pixel
centres onto pixel centres (a quarter turn, the identity) reproduces the pixels to the input's rounding.
:class:`RandomAffine` draws all three at once and resamples once (less blur than a chain of three).

:func:`compose` chains transforms; :func:`as_batch_transform` adapts one to the Trainer's
``batch_transform(x, y, generator) -> (x, y)`` (inputs only; labels and batch size kept).

>>> import torch
>>> augment = compose(RandomRotation(15), RandomShift(1), AddGaussianNoise(0.05))
>>> x = torch.rand(32, 1, 8, 8)
>>> torch.equal(augment(x, torch.Generator().manual_seed(0)), augment(x, torch.Generator().manual_seed(0)))
True
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from optreg._checks import check_choice, check_nonneg, check_range
from optreg.errors import OptregTypeError, OptregValueError

__all__ = [
    "AddGaussianNoise",
    "Augmentation",
    "BatchTransform",
    "Compose",
    "RandomAffine",
    "RandomFlip",
    "RandomRotation",
    "RandomShift",
    "RandomShift1d",
    "RandomStretch",
    "RandomZoom",
    "as_batch_transform",
    "compose",
]

Params = dict[str, Tensor]

_MODES = ("bilinear", "nearest")
_PADDING = ("zeros", "border", "reflection")
_LAYOUTS = {
    "image": ((3, 4), "a batch of images (N, C, H, W) or (N, H, W)"),
    "signal": ((2, 3), "a batch of signals (N, L) or (N, C, L)"),
    "any": ((1, 2, 3, 4, 5, 6, 7, 8), "a batch (N, ...)"),
}


# ----------------------------------------------------------------------------------------- checks


def _is_pair(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes) and len(value) == 2


def _interval(owner: str, name: str, value: Any, *, positive: bool = False) -> tuple[float, float]:
    """A range ``(low, high)`` with ``low <= high``: a pair, or a number ``d`` meaning ``(-d, d)`` (``d >= 0``),
    or, for ``positive`` ranges (zoom and stretch factors, both ends > 0), a number ``z`` meaning ``(z, z)``."""
    what = (
        "a number > 0 or a pair (low, high) with 0 < low <= high"
        if positive
        else "a number >= 0 or a pair (low, high) with low <= high"
    )
    if _is_pair(value) and all(isinstance(v, Real) and not isinstance(v, bool) for v in value):
        low, high = float(value[0]), float(value[1])
    elif isinstance(value, Real) and not isinstance(value, bool):
        low, high = (float(value), float(value)) if positive else (-float(value), float(value))
    else:
        raise OptregValueError(f"{owner}: {name} must be {what}, got {value!r}")
    ok = math.isfinite(low) and math.isfinite(high) and low <= high and (low > 0 if positive else True)
    if not ok:
        raise OptregValueError(f"{owner}: {name} must be {what}, got {value!r}")
    return low, high


def _max_shift(owner: str, value: Any, integer: bool, axes: int) -> tuple[float, ...]:
    """The largest shift per axis, >= 0: a number for every axis or (images) a pair ``(rows, columns)``."""
    if not isinstance(integer, bool):
        raise OptregValueError(f"{owner}: integer must be true or false, got {integer!r}")
    values = tuple(value) if axes == 2 and _is_pair(value) else (value,) * axes
    what = "an integer >= 0" if integer else "a number >= 0"
    what += " or a pair (rows, columns) of them" if axes == 2 else ""
    for v in values:
        if isinstance(v, bool) or not isinstance(v, Real) or not (math.isfinite(v) and v >= 0):
            raise OptregValueError(f"{owner}: max_shift must be {what}, got {value!r}")
        if integer and float(v) != int(v):
            raise OptregValueError(f"{owner}: max_shift must be {what} (integer=True), got {value!r}")
    return tuple(float(v) for v in values)


def _check_batch(owner: str, x: Any, layout: str) -> Tensor:
    ranks, what = _LAYOUTS[layout]
    if not isinstance(x, Tensor):
        raise OptregTypeError(f"{owner}: x must be a torch tensor, got {type(x).__name__}")
    if x.ndim not in ranks:
        hint = " (reshape flat features first, e.g. as_batch_transform(t, shape=(1, 8, 8)))" if x.ndim == 2 else ""
        raise OptregValueError(f"{owner}: x must be {what}, got shape {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise OptregTypeError(f"{owner}: x must be a floating-point tensor, got {x.dtype}")
    return x


def _check_generator(owner: str, generator: Any) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise OptregTypeError(f"{owner}: generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def _uniform(owner: str, x: Tensor, columns: int, generator: torch.Generator | None) -> Tensor:
    """``(N, columns)`` uniform draws in [0, 1) (float64, on ``x``'s device): one vectorized call.

    They are drawn on the generator's device (``x``'s without one) and moved to ``x``'s."""
    device = x.device if _check_generator(owner, generator) is None else generator.device
    u = torch.rand(x.shape[0], columns, generator=generator, dtype=torch.float64, device=device)
    return u.to(x.device)


def _params(owner: str, params: Any, x: Tensor, keys: tuple[str, ...]) -> Params:
    if not isinstance(params, dict) or any(k not in params for k in keys):
        raise OptregValueError(f"{owner}: params must be a dict with keys {list(keys)} (from sample), got {params!r}")
    for k in keys:
        if not isinstance(params[k], Tensor) or params[k].shape[:1] != x.shape[:1]:
            raise OptregValueError(f"{owner}: params[{k!r}] must be a tensor with one row per example of x")
    return {k: params[k].to(x.device) for k in keys}


# ----------------------------------------------------------------------------------------- base classes


class Augmentation(ABC):
    """Base of the transforms: ``transform(x, generator=None) -> x`` is ``apply(x, sample(x, generator))``."""

    _owner: ClassVar[str] = "augmentation"
    _layout: ClassVar[str] = "any"
    _keys: ClassVar[tuple[str, ...]] = ("apply",)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.apply(x, self.sample(x, generator))

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> Params:
        """Per-example random parameters for the batch ``x`` (one row per example), drawn from ``generator``."""
        x = _check_batch(self._owner, x, self._layout)
        return self._sample(x, generator)

    def apply(self, x: Tensor, params: Params) -> Tensor:
        """``x`` transformed with the parameters ``params`` of :meth:`sample` (examples whose
        ``params["apply"]`` is false are returned unchanged)."""
        x = _check_batch(self._owner, x, self._layout)
        return self._apply(x, _params(self._owner, params, x, self._keys))

    @abstractmethod
    def _sample(self, x: Tensor, generator: torch.Generator | None) -> Params: ...

    @abstractmethod
    def _apply(self, x: Tensor, params: Params) -> Tensor: ...

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def _check_p(self) -> None:
        self._set("p", check_range(self._owner, "p", self.p, 0.0, 1.0))  # type: ignore[attr-defined]


def _where(apply: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """Per example: ``new`` where ``apply``, else ``old`` untouched."""
    return torch.where(apply.reshape(-1, *([1] * (old.ndim - 1))), new, old)


def _warp(x4: Tensor, angle: Tensor, zoom: Tensor, shift: Tensor, mode: str, padding_mode: str) -> Tensor:
    """Affine resampling ``y(p) = x(R(angle) (p - shift) / zoom)`` of ``(N, C, H, W)`` images (module docstring).

    ``angle`` (N,) in degrees counterclockwise, ``zoom`` (N,) > 0, ``shift`` (N, 2) in pixels ``(down, right)``.
    The map is built in pixel coordinates (so it is a true rotation on non-square images) and converted to
    ``affine_grid``'s normalized coordinates ``p / (W/2, H/2)`` (``align_corners=False``). The grid and the
    resampling are float64 whatever the input's dtype (the result is cast back): a float32 grid resolves a
    position only to about ``1e-7 W`` pixels (errors above 1e-6 from 15 pixels on); float64 costs about 15%
    more time on a CPU.
    """
    n, _, h, w = x4.shape
    a = torch.deg2rad(angle.to(torch.float64))
    c, s = torch.cos(a), torch.sin(a)
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (N, 2, 2), out -> in
    m = rot / zoom.to(torch.float64)[:, None, None]
    t = -(m @ shift.to(torch.float64).flip(-1)[..., None])[..., 0]  # shift as (x, y)
    half = torch.tensor([w / 2, h / 2], dtype=torch.float64, device=x4.device)
    theta = torch.cat([m * half[None, :] / half[:, None], (t / half)[..., None]], -1)  # (N, 2, 3)
    grid = F.affine_grid(theta, [n, x4.shape[1], h, w], align_corners=False)
    out = F.grid_sample(x4.to(torch.float64), grid, mode=mode, padding_mode=padding_mode, align_corners=False)
    return out.to(x4.dtype)


class _Warp(Augmentation):
    """An affine resampling: subclasses draw ``angle``, ``zoom`` and ``shift`` (identity where they do not vary)."""

    _keys: ClassVar[tuple[str, ...]] = ("apply", "angle", "zoom", "shift")

    def _check_modes(self) -> None:
        check_choice(self._owner, "padding_mode", self.padding_mode, _PADDING)  # type: ignore[attr-defined]
        check_choice(self._owner, "mode", self._mode, _MODES)

    @property
    def _mode(self) -> str:
        return getattr(self, "mode", "bilinear")

    def _as_4d(self, x: Tensor) -> Tensor:
        if self._layout == "image":
            return x.unsqueeze(1) if x.ndim == 3 else x
        return x.reshape(x.shape[0], -1 if x.ndim == 3 else 1, 1, x.shape[-1])  # (N, C, 1, L)

    def _apply(self, x: Tensor, params: Params) -> Tensor:
        x4 = self._as_4d(x)
        mode = self._mode
        if getattr(self, "integer", False):
            mode = "nearest"  # whole-pixel moves: exact
        out = _warp(x4, params["angle"], params["zoom"], params["shift"], mode, self.padding_mode)  # type: ignore[attr-defined]
        return _where(params["apply"], out.reshape(x.shape), x)

    def _draw(self, x: Tensor, generator: torch.Generator | None, columns: int) -> tuple[Tensor, Tensor]:
        """``(apply, u)``: whether each example is transformed, and ``columns`` uniforms per example."""
        u = _uniform(self._owner, x, columns + 1, generator)
        return u[:, 0] < self.p, u[:, 1:]  # type: ignore[attr-defined]

    @staticmethod
    def _identity(n: int, device: torch.device) -> Params:
        f64 = torch.float64
        return {
            "angle": torch.zeros(n, dtype=f64, device=device),
            "zoom": torch.ones(n, dtype=f64, device=device),
            "shift": torch.zeros(n, 2, dtype=f64, device=device),
        }


class _RangeWarp(_Warp):
    """A warp with one random parameter ``_param`` (``"angle"`` or ``"zoom"``) drawn uniformly from the range
    in field ``_field`` (zoom factors must be > 0); the others stay at the identity."""

    _field: ClassVar[str]
    _param: ClassVar[str]

    def __post_init__(self) -> None:
        value = _interval(self._owner, self._field, getattr(self, self._field), positive=self._param == "zoom")
        self._set(self._field, value)
        self._check_p()
        self._check_modes()

    def _sample(self, x: Tensor, generator: torch.Generator | None) -> Params:
        apply, u = self._draw(x, generator, 1)
        params = self._identity(x.shape[0], x.device)
        params[self._param] = _between(u[:, 0], getattr(self, self._field))
        return {"apply": apply, **params}


def _between(u: Tensor, interval: tuple[float, float]) -> Tensor:
    return interval[0] + (interval[1] - interval[0]) * u


def _shifts(u: Tensor, max_shift: tuple[float, ...], integer: bool) -> Tensor:
    """Shifts in ``[-m, m]`` per column: uniform on the integers ``-m..m``, or on the interval."""
    m = torch.tensor(max_shift, dtype=u.dtype, device=u.device)
    if integer:
        return torch.minimum(torch.floor(u * (2 * m + 1)), 2 * m) - m
    return (2 * u - 1) * m


# ----------------------------------------------------------------------------------------- images


@dataclass(frozen=True)
class RandomRotation(_RangeWarp):
    """Rotate each image counterclockwise by an angle drawn uniformly from ``degrees`` (section 7.7.5, 旋转).

    ``degrees``: a number ``d >= 0`` for ``[-d, d]``, or a pair ``(low, high)`` in degrees; ``(90, 90)`` is
    ``torch.rot90(x, 1, dims=(-2, -1))`` on square images. Rotation about the centre by ``F.grid_sample``
    (``mode``: ``"bilinear"`` or ``"nearest"``; corners outside the input read ``padding_mode``).
    """

    degrees: float | tuple[float, float] = 15.0
    p: float = 1.0
    mode: str = "bilinear"
    padding_mode: str = "zeros"
    _owner: ClassVar[str] = "random_rotation"
    _layout: ClassVar[str] = "image"
    _field: ClassVar[str] = "degrees"
    _param: ClassVar[str] = "angle"


@dataclass(frozen=True)
class RandomShift(_Warp):
    """Shift each image by a random number of pixels along each axis (section 7.7.5, 平移).

    ``max_shift``: the largest shift, a number for both axes or a pair ``(rows, columns)``; each example's
    shift ``(down, right)`` is drawn uniformly from ``-max_shift..max_shift``: whole pixels with
    ``integer=True`` (exact: the shifted array with ``padding_mode`` filling the vacated pixels, zeros by
    default), a real number of pixels with bilinear interpolation otherwise.
    """

    max_shift: float | tuple[float, float] = 1
    integer: bool = True
    p: float = 1.0
    padding_mode: str = "zeros"
    _owner: ClassVar[str] = "random_shift"
    _layout: ClassVar[str] = "image"

    def __post_init__(self) -> None:
        self._set("max_shift", _max_shift(self._owner, self.max_shift, self.integer, 2))
        self._check_p()
        self._check_modes()

    def _sample(self, x: Tensor, generator: torch.Generator | None) -> Params:
        apply, u = self._draw(x, generator, 2)
        params = self._identity(x.shape[0], x.device)
        params["shift"] = _shifts(u, self.max_shift, self.integer)
        return {"apply": apply, **params}


@dataclass(frozen=True)
class RandomZoom(_RangeWarp):
    """Zoom each image in or out about its centre by a factor drawn uniformly from ``scale`` (7.7.5, 缩放).

    ``scale``: a pair ``(low, high)`` with ``0 < low <= high`` (a factor > 1 enlarges the content, < 1
    shrinks it and fills the border with ``padding_mode``), or one number for a fixed factor.
    """

    scale: float | tuple[float, float] = (0.9, 1.1)
    p: float = 1.0
    mode: str = "bilinear"
    padding_mode: str = "zeros"
    _owner: ClassVar[str] = "random_zoom"
    _layout: ClassVar[str] = "image"
    _field: ClassVar[str] = "scale"
    _param: ClassVar[str] = "zoom"


@dataclass(frozen=True)
class RandomAffine(_Warp):
    """Rotation, zoom and shift drawn together and applied in one resampling: ``y(p) = x(R(a)(p - s)/z)``.

    The fields mean what they mean in :class:`RandomRotation`, :class:`RandomZoom` and
    :class:`RandomShift` (shifts here are real numbers of pixels, interpolated with ``mode``).
    """

    degrees: float | tuple[float, float] = 0.0
    max_shift: float | tuple[float, float] = 0.0
    scale: float | tuple[float, float] = 1.0
    p: float = 1.0
    mode: str = "bilinear"
    padding_mode: str = "zeros"
    _owner: ClassVar[str] = "random_affine"
    _layout: ClassVar[str] = "image"

    def __post_init__(self) -> None:
        self._set("degrees", _interval(self._owner, "degrees", self.degrees))
        self._set("max_shift", _max_shift(self._owner, self.max_shift, False, 2))
        self._set("scale", _interval(self._owner, "scale", self.scale, positive=True))
        self._check_p()
        self._check_modes()

    def _sample(self, x: Tensor, generator: torch.Generator | None) -> Params:
        apply, u = self._draw(x, generator, 4)
        return {
            "apply": apply,
            "angle": _between(u[:, 0], self.degrees),
            "zoom": _between(u[:, 1], self.scale),
            "shift": _shifts(u[:, 2:], self.max_shift, False),
        }


@dataclass(frozen=True)
class RandomFlip(Augmentation):
    """Flip each image with probability ``p`` (section 7.7.5, 翻转): ``axis="horizontal"`` mirrors left and
    right (``torch.flip`` of the last dimension), ``"vertical"`` top and bottom (the height dimension)."""

    p: float = 0.5
    axis: str = "horizontal"
    _owner: ClassVar[str] = "random_flip"
    _layout: ClassVar[str] = "image"

    def __post_init__(self) -> None:
        self._check_p()
        check_choice(self._owner, "axis", self.axis, ("horizontal", "vertical"))

    def _sample(self, x: Tensor, generator: torch.Generator | None) -> Params:
        return {"apply": _uniform(self._owner, x, 1, generator)[:, 0] < self.p}

    def _apply(self, x: Tensor, params: Params) -> Tensor:
        return _where(params["apply"], x.flip(-1 if self.axis == "horizontal" else -2), x)


# ----------------------------------------------------------------------------------------- 1-D signals


@dataclass(frozen=True)
class RandomShift1d(_Warp):
    """Shift each signal in time by a random amount in ``[-max_shift, max_shift]`` samples (to the right for
    a positive shift): whole samples with ``integer=True`` (exact, the vacated samples filled by
    ``padding_mode``), real amounts with linear interpolation otherwise."""

    max_shift: float = 4
    integer: bool = True
    p: float = 1.0
    padding_mode: str = "zeros"
    _owner: ClassVar[str] = "random_shift1d"
    _layout: ClassVar[str] = "signal"

    def __post_init__(self) -> None:
        self._set("max_shift", _max_shift(self._owner, self.max_shift, self.integer, 1)[0])
        self._check_p()
        self._check_modes()

    def _sample(self, x: Tensor, generator: torch.Generator | None) -> Params:
        apply, u = self._draw(x, generator, 1)
        params = self._identity(x.shape[0], x.device)
        params["shift"][:, 1] = _shifts(u[:, 0], (self.max_shift,), self.integer)
        return {"apply": apply, **params}


@dataclass(frozen=True)
class RandomStretch(RandomZoom):
    """Stretch each signal in time about its centre by a factor drawn uniformly from ``scale``:
    ``y(t) = x(c + (t - c) / z)``, ``c = (L - 1) / 2``, linear interpolation (``mode="bilinear"`` on the
    ``(N, C, 1, L)`` view). A factor > 1 slows the signal down (a linear ramp keeps 1/z of its slope),
    < 1 speeds it up and pads both ends with ``padding_mode``. (The zoom of :class:`RandomZoom`, in time.)"""

    scale: float | tuple[float, float] = (0.8, 1.2)
    _owner: ClassVar[str] = "random_stretch"
    _layout: ClassVar[str] = "signal"


# ----------------------------------------------------------------------------------------- noise


@dataclass(frozen=True)
class AddGaussianNoise(Augmentation):
    """Add ``std * eps``, ``eps ~ N(0, I)``, to each example with probability ``p`` (7.7.5, 加噪声; file 004's
    noise on the inputs). Any batch ``(N, ...)``: images, signals or flat features."""

    std: float = 0.1
    p: float = 1.0
    _owner: ClassVar[str] = "add_gaussian_noise"
    _keys: ClassVar[tuple[str, ...]] = ("apply", "noise")

    def __post_init__(self) -> None:
        self._set("std", check_nonneg(self._owner, "std", self.std))
        self._check_p()

    def _sample(self, x: Tensor, generator: torch.Generator | None) -> Params:
        apply = _uniform(self._owner, x, 1, generator)[:, 0] < self.p
        device = x.device if generator is None else generator.device
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)
        return {"apply": apply, "noise": noise}

    def _apply(self, x: Tensor, params: Params) -> Tensor:
        return _where(params["apply"], x + self.std * params["noise"].to(x.dtype), x)


# ----------------------------------------------------------------------------------------- composition


Transform = Callable[..., Tensor]


@dataclass(frozen=True)
class Compose:
    """Apply ``transforms`` in order, all drawing from the same generator: ``Compose((a, b))(x, g)`` is
    ``b(a(x, g), g)``. Each is a callable ``(x, generator) -> x`` (the transforms here, or your own)."""

    transforms: tuple[Transform, ...]
    _owner: ClassVar[str] = "compose"

    def __post_init__(self) -> None:
        ts = self.transforms
        if isinstance(ts, str | bytes) or not isinstance(ts, Sequence):
            raise OptregTypeError(f"{self._owner}: transforms must be a sequence of transforms, got {ts!r}")
        for t in ts:
            if not callable(t):
                raise OptregTypeError(f"{self._owner}: every transform must be callable (x, generator) -> x, got {t!r}")
        object.__setattr__(self, "transforms", tuple(ts))

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_generator(self._owner, generator)
        for t in self.transforms:
            x = t(x, generator)
        return x


def compose(*transforms: Transform) -> Compose:
    """``compose(a, b, c)``: the transforms applied in order (nested :class:`Compose` are flattened)."""
    flat: list[Transform] = []
    for t in transforms:
        flat.extend(t.transforms if isinstance(t, Compose) else (t,))
    return Compose(tuple(flat))


@dataclass(frozen=True)
class BatchTransform:
    """A Trainer ``batch_transform``: ``(x, y, generator=None) -> (transform(x, generator), y)``.

    The labels pass through; ``shape`` (optional, one example's shape, e.g. ``(1, 8, 8)``) views flat
    features ``(N, D)`` as ``(N, *shape)`` for the transform and flattens the result back. The output must
    have the input's shape (the batch size in particular): a transform that changes it is an error.
    """

    transform: Transform
    shape: tuple[int, ...] | None = None
    _owner: ClassVar[str] = "batch_transform"

    def __post_init__(self) -> None:
        if not callable(self.transform):
            raise OptregTypeError(
                f"{self._owner}: transform must be callable (x, generator) -> x, got {self.transform!r}"
            )
        if self.shape is not None:
            shape = self.shape
            if not isinstance(shape, Sequence) or not shape or any(
                isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape
            ):
                raise OptregValueError(f"{self._owner}: shape must be a tuple of integers >= 1, got {shape!r}")
            object.__setattr__(self, "shape", tuple(shape))

    def __call__(self, x: Tensor, y: Any, generator: torch.Generator | None = None) -> tuple[Tensor, Any]:
        if not isinstance(x, Tensor) or x.ndim == 0:
            raise OptregValueError(f"{self._owner}: x must be a batch tensor (N, ...), got {x!r}")
        inner = x
        if self.shape is not None:
            if math.prod(self.shape) != math.prod(x.shape[1:]):
                raise OptregValueError(
                    f"{self._owner}: shape {self.shape} does not fit examples of shape {tuple(x.shape[1:])}"
                )
            inner = x.reshape(x.shape[0], *self.shape)
        out = self.transform(inner, generator)
        if not isinstance(out, Tensor) or out.shape != inner.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise OptregValueError(
                f"{self._owner}: {self.transform!r} must keep the batch shape {tuple(inner.shape)}, got {got}"
            )
        return out.reshape(x.shape), y


def as_batch_transform(transform: Transform, *, shape: Sequence[int] | None = None) -> BatchTransform:
    """Adapt ``transform(x, generator) -> x`` to the Trainer's ``batch_transform(x, y, generator) -> (x, y)``:
    augment the inputs only, keep the labels and the batch size (see :class:`BatchTransform`).

    >>> bt = as_batch_transform(compose(RandomShift(1), RandomRotation(10)), shape=(1, 8, 8))
    >>> x, y = torch.rand(16, 64), torch.arange(16)
    >>> [tuple(t.shape) for t in bt(x, y, torch.Generator().manual_seed(0))]
    [(16, 64), (16,)]
    """
    return BatchTransform(transform, None if shape is None else tuple(shape))

"""torch.optim in optreg's terms: a torch class and its keywords as an optreg optimizer on the same trajectory.

>>> import torch, optreg.optim as oo
>>> model = torch.nn.Linear(4, 2)
>>> opt = oo.from_torch(torch.optim.Adam, model.parameters(), lr=1e-3, betas=(0.9, 0.99))
>>> oo.torch_hparams("RMSprop", alpha=0.9)[0]
'rmsprop'

:func:`torch_hparams` translates the keywords: torch's defaults are filled in first (they are not always
optreg's: torch's SGD has ``lr=1e-3``, its RMSprop ``alpha=0.99``, its Adagrad puts epsilon outside the root),
then renamed (``betas`` -> ``beta1``, ``beta2``; RMSprop's ``alpha`` and Adadelta's ``rho`` -> ``beta``; Adadelta's
``eps`` -> ``eps_root``), and the settings torch's algorithm implies are added (``eps_root=0`` where torch's
epsilon is outside the root). Hyperparameters only torch has keep torch's names (``amsgrad``, ``dampening``,
``lr_decay``, ``etas``, ``lambd``, ...). A 1-element tensor becomes a 0-d tensor (torch's ``_to_scalar``).

torch's flags ``maximize``, ``foreach``, ``fused``, ``differentiable`` and ``capturable`` keep their names and
are handed to the adapter as parameter-group keys (torch keeps them in every group too), which honours or
refuses each; they are passed only when given. A torch option optreg cannot reproduce raises an
:class:`~optreg.errors.OptregValueError` naming it; a keyword torch does not know, an
:class:`~optreg.errors.OptregTypeError`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from optreg.errors import OptregError, OptregTypeError, OptregValueError
from optreg.optim.optimizer import Optimizer
from optreg.optim.registry import available, get

# torch's implementation and direction flags: group keys for the adapter, never renamed.
FLAGS = ("maximize", "foreach", "fused", "differentiable", "capturable")


@dataclass(frozen=True)
class _Entry:
    """How one torch.optim class maps to optreg: ``rename[torch keyword] = optreg name`` (a tuple of names
    unpacks a torch pair, e.g. ``betas``), ``implied`` the optreg settings torch's algorithm fixes, ``refused``
    the reason a class is not supported (then nothing else is used)."""

    name: str
    rename: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)
    implied: Mapping[str, Any] = field(default_factory=dict)
    refused: str = ""


def _same(*names: str) -> dict[str, str]:
    return {n: n for n in names}


_BETAS = {"betas": ("beta1", "beta2")}

ENTRIES: dict[str, _Entry] = {
    "SGD": _Entry("sgd", _same("lr", "momentum", "dampening", "weight_decay", "nesterov")),
    "Adam": _Entry(
        "adam", {**_same("lr", "eps", "weight_decay", "amsgrad", "decoupled_weight_decay"), **_BETAS},
        {"eps_root": 0.0},
    ),
    "AdamW": _Entry("adamw", {**_same("lr", "eps", "weight_decay", "amsgrad"), **_BETAS}, {"eps_root": 0.0}),
    "NAdam": _Entry(
        "nadam", {**_same("lr", "eps", "weight_decay", "momentum_decay", "decoupled_weight_decay"), **_BETAS},
        {"eps_root": 0.0},
    ),
    "RAdam": _Entry("radam", {**_same("lr", "eps", "weight_decay", "decoupled_weight_decay"), **_BETAS}),
    "Adamax": _Entry("adamax", {**_same("lr", "eps", "weight_decay"), **_BETAS}),
    # torch: clr = lr / (1 + (t-1) lr_decay), u = g / (sqrt(G) + eps): epsilon outside the root
    "Adagrad": _Entry(
        "adagrad", _same("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"), {"eps_root": 0.0}
    ),
    # torch: sqrt(dX + eps) / sqrt(G + eps): epsilon inside both roots
    "Adadelta": _Entry("adadelta", {**_same("lr", "weight_decay"), "rho": "beta", "eps": "eps_root"}, {"eps": 0.0}),
    # torch: g / (sqrt(G) + eps): epsilon outside the root
    "RMSprop": _Entry(
        "rmsprop", {**_same("lr", "eps", "weight_decay", "momentum", "centered"), "alpha": "beta"},
        {"eps_root": 0.0},
    ),
    "Rprop": _Entry("rprop", _same("lr", "etas", "step_sizes")),
    "ASGD": _Entry("asgd", _same("lr", "lambd", "alpha", "t0", "weight_decay")),
    "Adafactor": _Entry("adafactor", _same("lr", "beta2_decay", "eps", "d", "weight_decay")),
    "Muon": _Entry(
        "muon",
        _same("lr", "weight_decay", "momentum", "nesterov", "ns_coefficients", "eps", "ns_steps", "adjust_lr_fn"),
    ),
    "LBFGS": _Entry(
        "lbfgs",
        refused="torch's LBFGS runs up to max_iter iterations per step(closure) with its own line search; "
        "optreg's 'lbfgs' runs one iteration per step (same minimum, other trajectory): create('lbfgs', ...) directly",
    ),
    "SparseAdam": _Entry(
        "sparseadam", refused="SparseAdam needs sparse gradients, which optreg's optimizers refuse; use 'adam'"
    ),
}


def _entry(cls_or_name: Any) -> tuple[str, _Entry]:
    """The torch class name and its entry, for a torch.optim class or its name (case-insensitive)."""
    given = cls_or_name.__name__ if isinstance(cls_or_name, type) else cls_or_name
    if isinstance(given, str):
        for key, entry in ENTRIES.items():
            if key.lower() == given.lower():
                return key, entry
    raise OptregValueError(
        f"from_torch: cls_or_name must be one of torch.optim.{', torch.optim.'.join(ENTRIES)} (or its name), "
        f"got {cls_or_name!r}"
    )


def _torch_signature(key: str) -> dict[str, Any]:
    """torch's keyword arguments of ``torch.optim.<key>`` and their defaults (from the installed torch)."""
    cls = getattr(torch.optim, key, None)
    if cls is None:
        return {}
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in params if p.name not in ("self", "params")}


def _scalar(owner: str, field_: str, value: Any) -> Any:
    """A 1-element tensor as a 0-d tensor (torch's ``_to_scalar``: a view, so writes to it still reach it)."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise OptregValueError(
                f"{owner}: {field_} must be a number or a 1-element tensor, got a tensor of shape {tuple(value.shape)}"
            )
        return value.reshape(())
    return value


def _translate(key: str, entry: _Entry, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """torch keywords -> optreg hyperparameters by ``entry``; flags and keys it does not rename pass through."""
    out: dict[str, Any] = {}
    for k, v in kwargs.items():
        target = entry.rename.get(k)
        if target is None:
            out[k] = v
        elif isinstance(target, tuple):
            if not isinstance(v, tuple | list) or len(v) != len(target):
                raise OptregValueError(f"{key}: {k} must be a pair ({', '.join(target)}), got {v!r}")
            out.update({t: _scalar(key, f"{k}[{i}]", x) for i, (t, x) in enumerate(zip(target, v))})
        else:
            out[target] = _scalar(key, k, v)
    return out


def _torch_refusals(key: str, kwargs: Mapping[str, Any]) -> None:
    """What torch's Adam and AdamW refuse at construction beyond value ranges (which optreg's transforms check):
    mixed number and tensor betas, and a tensor lr or betas with ``foreach=True`` unless ``capturable``."""
    if key not in ("Adam", "AdamW"):
        return
    betas = kwargs.get("betas", ())
    kinds = {isinstance(b, Tensor) for b in betas} if isinstance(betas, tuple | list) else set()
    if len(kinds) == 2:
        raise OptregValueError(f"{key}: betas must be both numbers or both tensors (as torch requires), got {betas!r}")
    if kwargs.get("foreach") and not kwargs.get("capturable"):
        for name, value in (("lr", kwargs.get("lr")), ("betas[0]", betas[0] if betas else None)):
            if isinstance(value, Tensor):
                raise OptregValueError(
                    f"{key}: {name} as a tensor needs capturable=True or foreach=False (as torch requires), "
                    f"got foreach=True"
                )


def torch_hparams(cls_or_name: Any, **torch_kwargs: Any) -> tuple[str, dict[str, Any]]:
    """``(optreg name, hyperparameters)`` for ``torch.optim.<cls>(params, **torch_kwargs)``.

    torch's defaults are filled in for every hyperparameter not given, so ``create(name, params, **hparams)``
    (flags aside, see the module docstring) follows torch's trajectory, not optreg's defaults.
    """
    key, entry = _entry(cls_or_name)
    if entry.refused:
        raise OptregValueError(f"{key}: not supported: {entry.refused}")
    signature = _torch_signature(key)
    unknown = sorted(k for k in torch_kwargs if k not in signature)
    if unknown:  # (as torch's constructor would: a flag it lacks, such as Muon's maximize, too)
        raise OptregTypeError(f"{key}: unexpected keyword argument(s) {', '.join(map(repr, unknown))}")
    unsupported = sorted(k for k in torch_kwargs if k not in entry.rename and k not in FLAGS)
    if unsupported:
        raise OptregValueError(f"{key}: torch option(s) {', '.join(map(repr, unsupported))} not supported by optreg")
    _torch_refusals(key, torch_kwargs)
    full = {k: v for k, v in signature.items() if k in entry.rename and v is not inspect.Parameter.empty}
    full.update(torch_kwargs)
    return entry.name, {**entry.implied, **_translate(key, entry, full)}


def from_torch(
    cls_or_name: Any,
    params: Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]],
    *,
    compile: bool = False,
    **torch_kwargs: Any,
) -> Optimizer:
    """``from_torch(torch.optim.Adam, params, lr=1e-3, betas=(0.9, 0.99))``: the optreg :class:`Optimizer` on
    torch's trajectory for ``torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.99))``.

    Parameter groups may use torch's keywords too (``{"params": ..., "betas": (0.8, 0.99)}``); torch's flags
    (``maximize``, ``foreach``, ...) become group keys, a group's own value winning, as in torch. The errors
    torch.optim.Optimizer's own checks raise (a bare tensor as ``params``, a parameter in two groups...) come
    back as optreg's (:class:`~optreg.errors.OptregError`).
    """
    key, entry = _entry(cls_or_name)
    name, hparams = torch_hparams(key, **torch_kwargs)
    if name not in available():
        raise OptregValueError(f"{key}: optreg's {name!r} is not available here (available: {', '.join(available())})")
    flags = {k: hparams.pop(k) for k in FLAGS if k in hparams}
    if isinstance(params, Tensor):
        raise OptregTypeError(
            f"{key}: params must be an iterable of tensors or of parameter-group dicts, got a {type(params).__name__}"
        )
    items = list(params)
    if items and isinstance(items[0], dict):
        groups = [{**flags, **_translate(key, entry, g)} if isinstance(g, dict) else g for g in items]
    else:
        groups = [{"params": items, **flags}] if flags else items
    try:
        return Optimizer(groups, get(name), compile=compile, **hparams)
    except OptregError:
        raise
    except TypeError as e:  # torch.optim.Optimizer's own checks
        raise OptregTypeError(f"{key}: {e}") from e
    except ValueError as e:
        raise OptregValueError(f"{key}: {e}") from e

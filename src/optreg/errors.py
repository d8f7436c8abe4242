"""optreg's exceptions.

Every exception optreg raises on purpose derives from :class:`OptregError`, so a caller can catch
all of them at once. Bad input is also a :class:`ValueError` (or :class:`TypeError`), so code written
against torch.optim's conventions keeps working.
"""

from __future__ import annotations


class OptregError(Exception):
    """Base class of every error optreg raises on purpose."""


class OptregValueError(OptregError, ValueError):
    """An invalid value: the message names the owner, the field, the value and what is allowed."""


class OptregTypeError(OptregError, TypeError):
    """An argument of the wrong kind (e.g. an unknown keyword)."""


class DivergenceError(OptregError, FloatingPointError):
    """Training produced a NaN or an infinity (raised by the trainer's divergence guard)."""


class ConfigError(OptregValueError):
    """A bad configuration file or entry: the message names the key, the value and what is allowed."""


class OptregWarning(UserWarning):
    """Something optreg can do but that is probably not what was meant (a schedule that ends before
    training does, a class without an example): the message says what and how to change it."""

"""Optional dependencies, imported where they are used: an absent one is an error naming the extra
that installs it (``pip install 'pyrovae[mlflow]'``)."""

import importlib

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(ImportError):
    """An optional dependency is not installed: the message names the extra that installs it."""


def require(module: str, extra: str, what: str):
    """``module`` imported, or a :class:`MissingExtraError` saying that ``what`` needs it and
    which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{what} needs {module}, which is not installed: pip install 'pyrovae[{extra}]'") \
            from None

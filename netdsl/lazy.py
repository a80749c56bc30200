"""One way to import a heavy optional package: on first use, with a clear error when it is missing.

``netdsl check`` never imports onnxruntime, TensorRT, cuda-python, PyTorch or Pillow; the code that
needs one calls :func:`lazy_import` where it is used::

    ort = lazy_import("onnxruntime", extra="cpu", purpose="the ONNX Runtime engine (--engine ort)")

A missing package raises a :class:`~netdsl.errors.NetdslError` (``EngineError`` unless ``error`` says
otherwise) that says what needs it and how to install it, never an ImportError traceback. A package
whose Python part imports but whose shared libraries do not load (``OSError``) gets the same treatment.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from .errors import EngineError, NetdslError


def install_hint(package: str, extra: str, purpose: str) -> str:
    """The message for a missing package that one of netdsl's extras installs."""
    return (f"{purpose} needs the Python package `{package}`, which is not installed; "
            f"install it with: pip install \"netdsl[{extra}]\"")


def lazy_import(name: str, *, extra: str | None = None, purpose: str | None = None, message: str | None = None,
                error: type[NetdslError] = EngineError) -> ModuleType:
    """Import module ``name`` (e.g. ``"cuda.bindings.runtime"``), or raise ``error``.

    The message is ``message`` when given, else :func:`install_hint` built from the top-level package,
    ``extra`` and ``purpose``. Already-imported modules cost a dictionary lookup.
    """
    module = sys.modules.get(name)
    if module is not None:
        return module
    text = message or install_hint(name.split(".")[0], extra or name, purpose or f"`{name}`")
    try:
        return importlib.import_module(name)
    except ImportError:
        raise error(text) from None
    except OSError as e:  # the Python bindings are there, their shared libraries are not
        raise error(f"{name} is installed but its libraries failed to load ({e}). {text}") from None


def first_available(*names: str, message: str, error: type[NetdslError] = EngineError) -> ModuleType:
    """The first of ``names`` that imports (alternative distributions of one API, e.g. tensorrt and
    tensorrt_rtx); ``error(message)`` when none does. A package that is present but broken is reported at once."""
    for name in names:
        module = sys.modules.get(name)
        if module is not None:
            return module
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
        except OSError as e:
            raise error(f"{name} is installed but its libraries failed to load ({e}). {message}") from None
    raise error(message)

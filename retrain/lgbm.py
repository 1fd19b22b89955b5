"""LightGBM, imported through ``load()``: in the `retrain` command's own process, without pandas.

LightGBM imports pandas whenever it is installed, only to accept pandas inputs; retrain hands it
NumPy arrays. On a 2-core machine pandas is 0.35 to 0.4 s of LightGBM's 0.6 s import, paid by
every command that trains or loads a model (`retrain run`, `retrain predict`). The `retrain`
command (``cli.entry``) sets ``HIDE_PANDAS``: pandas is then hidden from LightGBM's import, on
that import's own thread only, and only when pandas is not imported already (LightGBM then says
PANDAS_INSTALLED = False). A process that imports retrain as a library is left as it is: its
LightGBM takes pandas frames as usual."""

from __future__ import annotations

import importlib.abc
import sys
import threading
from types import ModuleType

HIDE_PANDAS = False
_LOCK = threading.Lock()


class _HidePandas(importlib.abc.MetaPathFinder):
    """Refuses pandas to the thread that imports LightGBM, for the time of that import."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()

    def find_spec(self, name, path=None, target=None):
        if threading.get_ident() == self.thread and (name == "pandas" or name.startswith("pandas.")):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden while LightGBM is imported)", name=name)
        return None


def load() -> ModuleType:
    """The lightgbm module."""
    if HIDE_PANDAS and "lightgbm" not in sys.modules and "pandas" not in sys.modules:
        with _LOCK:
            if "lightgbm" not in sys.modules:
                finder = _HidePandas()
                sys.meta_path.insert(0, finder)
                try:
                    import lightgbm  # noqa: F401
                except ImportError:  # a LightGBM that cannot do without pandas: imported whole below
                    for name in [m for m in sys.modules if m == "lightgbm" or m.startswith("lightgbm.")]:
                        del sys.modules[name]
                finally:
                    sys.meta_path.remove(finder)
    import lightgbm

    return lightgbm

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


def set_threads(threads: int) -> bool:
    """Set the threads of LightGBM's parallel loops from now on, in every fit of this process
    (LightGBM >= 4 keeps one process-wide count, which each Dataset, Booster and prediction sets
    again from its own ``num_threads``): a fit running alone can take the threads a finished one
    left. The trees do not change (deterministic, column-wise histograms). False when this
    LightGBM has no such count (nothing is done)."""
    import ctypes

    lib = getattr(load().basic, "_LIB", None)
    setter = getattr(lib, "OMP_SET_NUM_THREADS", None) if lib is not None else None
    if setter is None:
        return False
    setter(ctypes.c_int(int(threads)))
    return True


def columns(x, names: list[str]):
    """A feature matrix as LightGBM builds a Dataset from it fastest: an Arrow table of its
    columns when this LightGBM reads Arrow through the PyCapsule interface (4.7 on), else the
    matrix itself. The bins, and so the model, are the same either way (the same float64
    values); the Dataset is built in 0.87 of the time (3.35 against 3.64 s for a whole
    185,000-row fit on one thread)."""
    lgb = load()
    if tuple(int(p) for p in lgb.__version__.split(".")[:2] if p.isdigit()) < (4, 7):
        return x
    import pyarrow as pa

    return pa.Table.from_arrays([pa.array(x[:, i]) for i in range(x.shape[1])], names=names)

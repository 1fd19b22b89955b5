"""retrain: keep a day-trading model fresh.

``retrain.run(...)`` runs the whole weekly loop with the options of `retrain run` and returns a
``RunResult`` (its ``to_dict()`` is the `--json` summary); see retrain.runner.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# Polars' allocator (jemalloc) gives freed memory back to the system half a second after it is
# freed, by Polars' default. A rebuild frees and allocates chunk after chunk for a minute, and
# then pays a page fault for every page it touches again: a third of the CPU of a long
# `retrain features --full-rebuild` went to the kernel. retrain keeps freed memory for 10 s
# instead (peak memory is what the chunks bound, and it stays within the targets). Polars reads
# this when it is imported: so only where retrain is imported first (the `retrain` command, its
# Dask workers), and never over a setting of the user's.
ALLOCATOR = "dirty_decay_ms:10000,muzzy_decay_ms:10000"
if "polars" not in _sys.modules and "_RJEM_MALLOC_CONF" not in _os.environ:
    _os.environ["_RJEM_MALLOC_CONF"] = ALLOCATOR

__all__ = ["RunResult", "run", "__version__"]


def __getattr__(name: str):
    # Imported on first use, so that `import retrain` stays cheap for the CLI.
    if name in ("run", "RunResult"):
        from retrain import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'retrain' has no attribute {name!r}")

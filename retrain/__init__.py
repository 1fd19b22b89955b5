"""retrain: keep a day-trading model fresh.

``retrain.run(...)`` runs the whole weekly loop with the options of `retrain run` and returns a
``RunResult`` (its ``to_dict()`` is the `--json` summary); see retrain.runner.
"""

__version__ = "0.1.0"

__all__ = ["RunResult", "run", "__version__"]


def __getattr__(name: str):
    # Imported on first use, so that `import retrain` stays cheap for the CLI.
    if name in ("run", "RunResult"):
        from retrain import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'retrain' has no attribute {name!r}")

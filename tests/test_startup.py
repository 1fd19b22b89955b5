"""The `retrain` command's own process: it ends without the interpreter's teardown (the exit
status and every line written are kept), and its LightGBM is imported without pandas, while a
process that imports retrain as a library keeps LightGBM's pandas support."""

from __future__ import annotations

import subprocess
import sys

from retrain.cli import main

PROBE = ("import sys; from retrain import lgbm; {flag}lgb = lgbm.load(); "
         "print('pandas' in sys.modules, lgb.compat.PANDAS_INSTALLED)")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_the_command_imports_lightgbm_without_pandas_and_a_library_with_it():
    hidden = _python(PROBE.format(flag="lgbm.HIDE_PANDAS = True; "))
    assert hidden.returncode == 0, hidden.stderr
    assert hidden.stdout.split() == ["False", "False"]
    library = _python(PROBE.format(flag=""))
    assert library.returncode == 0, library.stderr
    assert library.stdout.split() == ["True", "True"]
    later = _python("import sys; from retrain import lgbm; lgbm.HIDE_PANDAS = True; import pandas; "
                    "print(lgbm.load().compat.PANDAS_INSTALLED)")  # pandas there already: nothing hidden
    assert later.returncode == 0 and later.stdout.split() == ["True"], later.stderr


def test_the_command_keeps_its_exit_status_and_output():
    def command(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "retrain.cli", *args], capture_output=True, text=True,
                              timeout=120)

    helped = command("--help")
    assert helped.returncode == 0
    listed = helped.stdout.split("Commands:", 1)[1].split()
    assert all(name in listed for name in main.commands)  # written to the end: every command listed
    assert command("--version").returncode == 0
    unknown = command("no-such-command")
    assert unknown.returncode == 2 and "No such command" in unknown.stderr
    refused = command("query", "DELETE FROM day_symbol", "--data-dir", "/nonexistent/retrain-test")
    assert refused.returncode == 1 and "read-only" in refused.stderr


def test_polars_keeps_freed_memory_longer_unless_told_otherwise():
    import os

    import retrain

    probe = "import os, retrain, polars; print(os.environ.get('_RJEM_MALLOC_CONF'))"
    clean = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}

    def conf(code: str, env: dict) -> str:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    # retrain first: Polars appends retrain's setting to its own (the last one wins in jemalloc)
    assert conf(probe, clean).endswith("," + retrain.ALLOCATOR)
    # the user's setting is left alone, and so is a Polars imported before retrain
    assert retrain.ALLOCATOR not in conf(probe, {**clean, "_RJEM_MALLOC_CONF": "narenas:2"})
    assert retrain.ALLOCATOR not in conf("import polars, os, retrain; print(os.environ['_RJEM_MALLOC_CONF'])", clean)

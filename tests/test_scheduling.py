"""The README's cron line and systemd unit, run as written (paths aside) on a fresh project
directory with cron's bare environment: they create what they need, ingest, then run."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl

from retrain import sample
from retrain.store import Store

ROOT = Path(__file__).resolve().parents[1]


def _block(kind: str) -> str:
    """The first ```kind fenced block of the README."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.search(rf"```{kind}\n(.*?)```", text, re.S).group(1)


def test_cron_line_and_systemd_unit_work_on_a_fresh_project(tmp_path):
    bars, syms = sample.generate(symbols=60, days=170, seed=4)  # ends at the last complete session
    last = bars["date"].max()
    project = tmp_path / "srv" / "retrain"
    project.mkdir(parents=True)
    shutil.copy(ROOT / "retrain.toml", project / "retrain.toml")
    (project / ".venv").symlink_to(Path(sys.prefix))  # what `make setup` would have built there
    store = Store(project / "data")
    with store.lock("test"):
        store.upsert_bars(bars.filter(pl.col("date") < last))
        store.upsert_symbols(syms)
    incoming = tmp_path / "bars" / "incoming"
    incoming.mkdir(parents=True)
    bars.filter((pl.col("date") == last) & (pl.col("exchange") == "NASDAQ")).drop("exchange").write_csv(
        incoming / f"{last}.csv")

    def local(text: str) -> str:
        return text.replace("/srv/retrain", str(project)).replace("/srv/bars/incoming", str(incoming))

    cron_env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", str(tmp_path)), "SHELL": "/bin/sh",
                "LOGNAME": "retrain"}
    assert not (project / "logs").exists()
    line = next(x for x in _block("cron").splitlines() if x.strip() and not x.startswith("#"))
    command = line.split(None, 5)[5]  # after the five schedule fields, as cron hands it to /bin/sh
    cron = subprocess.run(["/bin/sh", "-c", local(command)], env=cron_env, capture_output=True, text=True,
                          check=False)
    log = (project / "logs" / "retrain.log").read_text()
    assert cron.returncode == 0, log + cron.stderr
    assert "Stored" in log and "RETRAINING COMPLETE!" in log and "\033[" not in log and "\r" not in log
    assert Store(project / "data").scan_bars().select(pl.col("date").max()).collect().item() == last

    unit = _block("ini").split("# retrain.timer")[0]
    workdir = local(re.search(r"^WorkingDirectory=(.*)$", unit, re.M).group(1))
    steps = [local(v) for v in re.findall(r"^ExecStart=(.*)$", unit, re.M)]
    assert len(steps) == 2 and "ingest" in steps[0] and " run" in steps[1]  # ingests, then runs
    shutil.rmtree(project / "logs")  # the unit creates it too
    for step in steps:
        done = subprocess.run(shlex.split(step), cwd=workdir, env=cron_env, capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, done.stderr + (project / "logs" / "retrain.log").read_text()
    log = (project / "logs" / "retrain.log").read_text()
    assert "0 new" in log and "Nothing changed since run" in log  # same bars again: no new run

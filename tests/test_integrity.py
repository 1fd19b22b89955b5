"""A store that verifies itself: every file has a checksum recorded with it, every read verifies
it. Bits flipped at random (seeded) in each kind of file are detected or repaired, never used
silently: the pipeline run on a corrupted copy of a small store either stops with an error
naming the file (bars, symbols, registry, runs) or, for derived files, rebuilds them with a
warning and ends as on the clean store. A missing checksum is adopted, an unreadable one is a
finding; a store from the previous release (no checksums at all) is adopted without an error;
and a writer killed between the checksum and the rename leaves no false alarm."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import signal
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from retrain import checksums, sample
from retrain.cli import main
from retrain.errors import CorruptFile, RetrainError
from retrain.files import atomic_write_text, commit, stage
from retrain.registry import Registry
from retrain.store import Store
from tests.conftest import run_cli, run_cli_here

END = dt.date(2025, 10, 17)
THU = dt.date(2025, 10, 16)
CONFIG = '[features]\nversion = "v1"\n\n[run]\nexchange = "NASDAQ"\n'
RUN = ["run", "--as-of", str(THU), "--skip-backtest", "--min-rows", "200", "--training-days", "90", "--json"]


def _invoke(root: Path, *args: str):
    flags = ["--data-dir", str(root / "data"), "--artifacts-dir", str(root / "artifacts"),
             "--config", str(root / "retrain.toml")]
    checksums.forget()  # as a new process would: nothing remembered
    return CliRunner().invoke(main, [*args, *flags], catch_exceptions=False)


def _last_json(result) -> dict:
    return json.loads(result.output.strip().splitlines()[-1])


def _features(root: Path) -> pl.DataFrame:
    return Store(root / "data").scan_table("features", "v1").collect().sort("exchange", "symbol", "trade_date")


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict:
    """A small project: two exchanges ingested from CSV files (so their sources are recorded),
    then one `retrain run` (indicators, features, labels, a model, its record, the registry)."""
    root = tmp_path_factory.mktemp("clean")
    (root / "retrain.toml").write_text(CONFIG)
    bars, syms = sample.generate(symbols=40, days=160, seed=5, end=END)
    inputs = root / "input"
    inputs.mkdir()
    for ex in ("NASDAQ", "NYSE"):
        bars.filter((pl.col("exchange") == ex) & (pl.col("date") <= THU)).drop("ingest_id", strict=False) \
            .write_csv(inputs / f"{ex}.csv")
    syms.write_csv(inputs / "symbols.csv")
    ingested = _invoke(root, "ingest", str(inputs / "NASDAQ.csv"), str(inputs / "NYSE.csv"), "--format", "long",
                       "--symbols-file", str(inputs / "symbols.csv"), "--as-of", str(THU))
    assert ingested.exit_code == 0, ingested.output
    ran = _invoke(root, *RUN)
    assert ran.exit_code == 0, ran.output
    return {"root": root, "run_id": _last_json(ran)["run_id"], "features": _features(root)}


@pytest.fixture
def copy(clean, tmp_path) -> Path:
    """A copy of the clean project (checksums and all) to damage."""
    for name in ("data", "artifacts", "input", "retrain.toml"):
        src = clean["root"] / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp_path / name)
    return tmp_path


def flip(path: Path, seed: int, bits: int = 3) -> None:
    """Flip ``bits`` random bits of ``path`` in place, keeping its modification time, as a
    failing disk would."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    rng = random.Random(seed)
    for _ in range(bits):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    with open(path, "r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    checksums.forget()


def _only_finding(root: Path, kind: str, path: Path) -> dict:
    checked = _invoke(root, "verify", "--json")
    assert checked.exit_code == 1, checked.output
    out = _last_json(checked)
    assert out["status"] == "findings" and out["checked"] > 40
    assert [(f["kind"], f["file"]) for f in out["findings"]] == [(kind, str(path))], out["findings"]
    return out["findings"][0]


def _bar_file(root: Path) -> Path:
    return root / "data/day_symbol/exchange=NASDAQ/month=2025-09/data.parquet"


# ----------------------------------------------------------------- a fresh store
def test_a_fresh_store_is_clean_and_every_file_has_its_checksum(clean):
    root = clean["root"]
    checked = _invoke(root, "verify", "--json")
    assert checked.exit_code == 0, checked.output
    out = _last_json(checked)
    assert out["status"] == "clean" and out["findings"] == [] and out["adopted"] == 0  # all recorded when written
    written = [p for d in ("data", "artifacts") for p in (root / d).rglob("*")
               if p.is_file() and not p.name.startswith(".")]
    assert out["checked"] == len(written) > 40
    assert all(checksums.sidecar(p).exists() for p in written)
    sources = json.loads((root / "data/day_symbol/exchange=NASDAQ/_sources.json").read_text())["files"]
    assert sources == {str(root / "input" / "NASDAQ.csv"): ["2025-03", "2025-10"]}


# -------------------------------------------------- a corrupted copy, kind by kind
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_corrupted_bars_stop_the_pipeline_naming_the_month_and_the_files_to_ingest_again(copy, clean, seed):
    path = _bar_file(copy)
    flip(path, seed)
    ran = _invoke(copy, *RUN)
    assert ran.exit_code == 1, ran.output
    assert f"error: {path} is corrupted" in ran.output and "the NASDAQ bars of 2025-09" in ran.output
    source = clean["root"] / "input" / "NASDAQ.csv"  # as ingested (the copy keeps the original's list)
    assert f"retrain ingest {source} --exchange NASDAQ" in ran.output
    assert "Traceback" not in ran.output
    assert _features(copy).equals(clean["features"])  # nothing was built from it
    finding = _only_finding(copy, "bars", path)
    assert "bars cannot be rebuilt" in finding["action"] and str(source) in finding["action"]
    repaired = _invoke(copy, "verify", "--repair")  # bars are not repaired: it says so
    assert repaired.exit_code == 1 and "could not be repaired" in repaired.output

    # what the message says to do: move it aside, ingest the source again; then all is as before
    aside = path.with_name("data.parquet.corrupt")
    path.rename(aside)
    gap = _invoke(copy, *RUN)  # a month without its file: the run says so (its sessions have no labels)
    assert "NASDAQ has no bar file for 2025-09, between months that have one" in gap.output
    again = _invoke(copy, "ingest", str(copy / "input" / "NASDAQ.csv"), "--format", "long", "--as-of", str(THU))
    assert again.exit_code == 0, again.output
    assert _invoke(copy, *RUN).exit_code == 0
    assert _features(copy).equals(clean["features"])
    checked = _invoke(copy, "verify", "--json")  # the file set aside is neither checked nor adopted: noted
    assert checked.exit_code == 0, checked.output
    notes = " ".join(_last_json(checked)["notes"])
    assert "set aside as .corrupt" in notes and str(aside) in notes and not checksums.sidecar(aside).exists()


def test_derived_files_are_not_touched_when_the_bars_they_come_from_are_corrupted(copy):
    bars, feat = _bar_file(copy), copy / "data/features/version=v1/exchange=NASDAQ/month=2025-08/data.parquet"
    flip(bars, 8)
    flip(feat, 9)
    damaged = feat.read_bytes()
    repaired = _invoke(copy, "verify", "--repair", "--json")
    assert repaired.exit_code == 1, repaired.output
    out = _last_json(repaired)
    assert [f["kind"] for f in out["findings"]] == ["bars", "features"] and out["repaired"] == []
    assert "left it as it was" in out["findings"][1]["action"] and str(bars) in out["findings"][1]["action"]
    assert feat.read_bytes() == damaged  # nothing deleted that could not be rebuilt
    ran = _invoke(copy, *RUN)
    assert ran.exit_code == 1 and f"error: {bars} is corrupted" in ran.output


def test_a_repair_that_cannot_rebuild_leaves_the_corrupted_file_where_it_was(copy, clean):
    """Indicators missing for bars a feature month reads: --repair cannot rebuild it, says what
    to run first, and leaves the file and its checksum in place (so verify still finds it);
    once the indicators are there, --repair rebuilds it."""
    feat = copy / "data/features/version=v1/exchange=NASDAQ/month=2025-08/data.parquet"
    flip(feat, 9)
    damaged = feat.read_bytes()
    july = pl.read_parquet(copy / "data/day_symbol/exchange=NASDAQ/month=2025-07/data.parquet")
    bar = july.sort("symbol", "date").head(1).select("symbol", "date", "open", "high", "low", "close", "adj_close",
                                                     "volume")
    edited = copy / "input" / "edit.csv"
    bar.with_columns(pl.col("volume") + 1).write_csv(edited)  # one July bar ingested again: its indicators go
    ingested = _invoke(copy, "ingest", str(edited), "--exchange", "NASDAQ", "--format", "long", "--as-of", str(THU))
    assert ingested.exit_code == 0, ingested.output

    repaired = _invoke(copy, "verify", "--repair", "--json")
    assert repaired.exit_code == 1, repaired.output
    out = _last_json(repaired)
    assert [f["kind"] for f in out["findings"]] == ["features"] and out["repaired"] == []
    action = out["findings"][0]["action"]
    assert "left it as it was" in action and "indicators are missing" in action and "retrain indicators" in action
    assert feat.read_bytes() == damaged and checksums.sidecar(feat).exists()  # where it was, with its checksum
    assert not (copy / "data" / ".repair").exists()
    _only_finding(copy, "features", feat)  # still found

    assert _invoke(copy, "indicators", "--exchange", "NASDAQ").exit_code == 0
    again = _invoke(copy, "verify", "--repair")
    assert again.exit_code == 0, again.output
    assert _invoke(copy, "verify").exit_code == 0


def test_a_repair_killed_part_way_is_put_back_at_the_next_verify(copy):
    from retrain.integrity import SetAside

    feat = copy / "data/features/version=v1/exchange=NASDAQ/month=2025-08/data.parquet"
    flip(feat, 9)
    damaged = feat.read_bytes()
    store = Store(copy / "data")
    with store.lock("test"):
        SetAside(store).move(feat)  # as a repair does before it rebuilds; then the process dies
    assert not feat.exists() and (copy / "data/.repair").is_dir()
    checked = _invoke(copy, "verify", "--json")
    assert checked.exit_code == 1
    out = _last_json(checked)
    assert [f["file"] for f in out["findings"]] == [str(feat)] and "put back" in " ".join(out["notes"])
    assert feat.read_bytes() == damaged and not (copy / "data/.repair").exists()


def test_corrupted_symbols_stop_the_pipeline(copy):
    path = copy / "data/symbols.parquet"
    flip(path, 4)
    ran = _invoke(copy, *RUN)
    assert ran.exit_code == 1 and f"error: {path} is corrupted" in ran.output and "sector" in ran.output
    _only_finding(copy, "symbols", path)
    # an ingest stops before it writes anything: all or nothing
    before = {p: p.read_bytes() for p in (copy / "data").rglob("*") if p.is_file()}
    new = copy / "input" / "NEWX.csv"
    new.write_text("Date,Open,High,Low,Close,Volume\n2025-10-17,10,11,9,10.5,100\n")  # a new symbol's bar
    ingested = _invoke(copy, "ingest", str(new), "--exchange", "NASDAQ", "--as-of", str(END))
    assert ingested.exit_code == 1 and f"{path} is corrupted" in ingested.output
    assert {p: p.read_bytes() for p in (copy / "data").rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(("relative", "kind"), [
    ("data/features/version=v1/exchange=NASDAQ/month=2025-08/data.parquet", "features"),
    ("data/features/version=v1/exchange=NASDAQ/month=2025-10/data.parquet", "features"),
    ("data/features/version=v1/_state.json", "features state"),
    ("data/labels/_state.json", "labels state"),
])
def test_corrupted_derived_files_are_rebuilt_with_a_warning_and_the_run_ends_as_on_the_clean_store(
        copy, clean, relative, kind):
    path = copy / relative
    flip(path, 5)
    _only_finding(copy, kind, path)
    ran = _invoke(copy, *RUN)
    assert ran.exit_code == 0, ran.output
    assert f"{path} is corrupted" in ran.output and "rebuilding it from the bars" in ran.output
    out = _last_json(ran)
    assert out["unchanged"] and out["run_id"] == clean["run_id"]  # the same rows: the same model, no new run
    assert _features(copy).equals(clean["features"])
    assert _invoke(copy, "verify").exit_code == 0


@pytest.mark.parametrize("relative", ["data/features/version=v1/exchange=NASDAQ/month=2025-06/data.parquet",
                                      "data/features/version=v1/_state.json", "data/labels/_state.json"])
def test_verify_repair_rebuilds_derived_files_from_the_bars(copy, clean, relative):
    path = copy / relative
    before = path.read_bytes()
    flip(path, 6)
    repaired = _invoke(copy, "verify", "--repair", "--json")
    assert repaired.exit_code == 0, repaired.output
    out = _last_json(repaired)
    assert out["status"] == "repaired" and out["findings"] == [] and out["repaired"]
    assert _features(copy).equals(clean["features"])
    if path.suffix == ".json":
        assert json.loads(path.read_text()) == json.loads(before)
    assert _invoke(copy, "verify").exit_code == 0


def test_corrupted_registry_files_and_models(copy, clean):
    art = copy / "artifacts/daytrading"
    run_dir = art / "runs" / clean["run_id"]
    # the active copies: a damaged metadata copy is answered from the run folder, a damaged model
    # copy refused (its sha256); `verify --repair` copies both again from the run folder
    model, meta = art / "intraday_model_v1.joblib", art / "intraday_model_v1_meta.json"
    originals = {p: p.read_bytes() for p in (model, meta)}
    flip(meta, 11)
    _only_finding(copy, "active model copy", meta)
    assert Registry(copy / "artifacts").load_active("v1", "NASDAQ").meta["run_id"] == clean["run_id"]
    flip(model, 10)  # both copies damaged: refused (sha256 of the model, checksum of the metadata)
    with pytest.raises(RetrainError, match="sha256|is corrupted"):
        Registry(copy / "artifacts").load_active("v1", "NASDAQ")
    repaired = _invoke(copy, "verify", "--repair", "--json")
    assert repaired.exit_code == 0 and "copied again from run" in repaired.output, repaired.output
    assert _last_json(repaired)["status"] == "repaired"
    assert all(p.read_bytes() == data for p, data in originals.items())
    # registry.json, the run's own files: never rebuilt, refused with what to do
    for i, (name, kind, command, says) in enumerate([
            ("registry.json", "registry", ["predict", "--as-of", str(THU), "--no-update"], "is corrupted"),
            (f"runs/{clean['run_id']}/model.joblib", "model", ["models", "promote", clean["run_id"]], "sha256"),
            (f"runs/{clean['run_id']}/meta.json", "run metadata", ["models", "show", clean["run_id"]],
             "is corrupted")]):
        path = art / name
        original = path.read_bytes()
        flip(path, 20 + i)
        refused = _invoke(copy, *command)
        assert refused.exit_code == 1 and f"error: {path}" in refused.output and says in refused.output, \
            refused.output
        finding = _only_finding(copy, kind, path)
        assert ("restore" in finding["action"]) and (kind != "registry" or "models promote" in finding["action"])
        assert _invoke(copy, "verify", "--repair").exit_code == 1  # not repairable: still a finding
        path.write_bytes(original)  # restored from a backup
    assert run_dir.is_dir() and _invoke(copy, "verify").exit_code == 0


def test_a_run_that_finds_its_model_active_already_mends_a_damaged_active_copy(copy, clean):
    model = copy / "artifacts/daytrading/intraday_model_v1.joblib"
    model.write_bytes(b"")  # truncated, as a full disk or a bad copy leaves it
    ran = _invoke(copy, *RUN)
    assert ran.exit_code == 0, ran.output
    out = _last_json(ran)
    assert out["unchanged"] and out["run_id"] == clean["run_id"]
    assert "copied again from its run folder" in ran.output
    assert _invoke(copy, "verify").exit_code == 0
    assert _invoke(copy, "predict", "--as-of", str(THU), "--top", "3", "--no-update").exit_code == 0


def test_a_run_whose_champion_cannot_be_read_is_kept_as_a_candidate_that_can_be_promoted(copy, clean):
    meta = copy / "artifacts/daytrading/runs" / clean["run_id"] / "meta.json"
    flip(meta, 3)
    listed = _invoke(copy, "models", "list")
    assert listed.exit_code == 0 and f"run {clean['run_id']} left out" in listed.output
    ran = _invoke(copy, *RUN)
    assert ran.exit_code == 0, ran.output
    out = _last_json(ran)
    assert not out["promoted"] and "cannot be read" in out["promotion_reason"]
    assert f"retrain models promote {out['run_id']}" in out["promotion_reason"]
    assert Registry(copy / "artifacts").active_run("v1", "NASDAQ") == clean["run_id"]  # the user decides
    promoted = _invoke(copy, "models", "promote", out["run_id"])
    assert promoted.exit_code == 0, promoted.output
    assert Registry(copy / "artifacts").active_run("v1", "NASDAQ") == out["run_id"]


def test_predict_past_a_corrupted_bars_file_warns_and_says_what_to_do(copy):
    bars = copy / "data/day_symbol/exchange=NASDAQ/month=2025-10/data.parquet"
    flip(bars, 2)
    ranked = _invoke(copy, "predict", "--as-of", str(THU), "--top", "3")
    assert ranked.exit_code == 0, ranked.output
    line = next(x for x in ranked.output.splitlines() if "were not brought up to date" in x)
    assert line.startswith("⚠") and str(bars) in line and "To bring them up to date:" in line


def test_a_corrupted_record_block_is_rebuilt(copy, clean):
    """A week later the CV folds before the newest are read back from the record: a corrupted
    one is rebuilt, with a warning, bit for bit."""
    block = sorted((copy / "artifacts/daytrading/records").rglob("block-*.parquet"))[-2]
    original = block.read_bytes()
    flip(block, 30)
    _only_finding(copy, "record", block)
    bars, _ = sample.generate(symbols=40, days=160, seed=5, end=END)
    new = copy / "input" / "friday.csv"
    bars.filter(pl.col("date") == END).drop("ingest_id", strict=False).write_csv(new)
    assert _invoke(copy, "ingest", str(new), "--format", "long", "--as-of", str(END)).exit_code == 0
    ran = _invoke(copy, *[str(END) if a == str(THU) else a for a in RUN])
    assert ran.exit_code == 0, ran.output
    assert f"record file {block}" in ran.output and "its block is rebuilt" in ran.output
    assert block.read_bytes() == original  # rebuilt bit for bit
    assert _invoke(copy, "verify").exit_code == 0


# ------------------------------------------------------------ checksum files
def test_a_missing_checksum_is_adopted_and_a_corrupted_one_is_a_finding_until_repaired(copy, clean):
    path = _bar_file(copy)
    checksums.sidecar(path).unlink()
    adopted = _invoke(copy, "verify", "--json")
    assert adopted.exit_code == 0 and _last_json(adopted)["adopted"] == 1
    assert checksums.sidecar(path).exists()

    side = checksums.sidecar(path)
    side.write_text(side.read_text().replace('"size"', '"sise"'))
    finding = _only_finding(copy, "bars", path)
    assert "checksum file .data.parquet.xxh3 is unreadable" in finding["problem"]
    ran = _invoke(copy, *RUN)  # never read without its checksum
    assert ran.exit_code == 1 and "checksum file .data.parquet.xxh3 is unreadable" in ran.output
    repaired = _invoke(copy, "verify", "--repair", "--json")
    assert repaired.exit_code == 0 and "recorded again from the file" in _last_json(repaired)["repaired"][0]
    assert _invoke(copy, *RUN).exit_code == 0

    # a derived file's unreadable checksum: the step rebuilds the file
    feat = copy / "data/features/version=v1/exchange=NASDAQ/month=2025-09/data.parquet"
    checksums.sidecar(feat).write_text("{not json")
    ran = _invoke(copy, *RUN)
    assert ran.exit_code == 0 and "rebuilding it from the bars" in ran.output
    assert _features(copy).equals(clean["features"]) and _invoke(copy, "verify").exit_code == 0


def test_a_store_from_the_previous_release_is_adopted(copy, clean):
    for side in [p for p in copy.rglob(".*.xxh3")]:
        side.unlink()
    for source in (copy / "data/day_symbol").glob("*/_sources.json"):
        source.unlink()
    ran = _invoke(copy, *RUN)  # reads without checksums, writes with them
    assert ran.exit_code == 0, ran.output
    first = _invoke(copy, "verify", "--json")
    assert first.exit_code == 0, first.output
    out = _last_json(first)
    assert out["status"] == "clean" and out["adopted"] > 20 and "adopted" in " ".join(out["notes"])
    again = _last_json(_invoke(copy, "verify", "--json"))
    assert again["status"] == "clean" and again["adopted"] == 0 and again["checked"] == out["checked"]
    flip(_bar_file(copy), 7)  # from now on, a flip is caught
    _only_finding(copy, "bars", _bar_file(copy))


# ------------------------------------------------------------ crash consistency
@pytest.mark.parametrize("point", ["store.before_rename", "store.checksums_written", "store.between_partitions"])
def test_a_writer_killed_between_checksums_and_renames_leaves_no_false_alarm(tmp_path, point):
    data = tmp_path / "data"
    env = {"RETRAIN_ARTIFACTS_DIR": str(tmp_path / "artifacts")}
    bars, _ = sample.generate(symbols=6, days=60, seed=3, end=END)
    bars = bars.filter(pl.col("exchange") == "NYSE").drop("ingest_id", strict=False)
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    bars.write_csv(first)
    bars.with_columns(pl.col("close") * 1.01, pl.col("high") * 1.01).write_csv(second)
    # only the killed writer needs a process of its own; the others run here, remembering nothing
    assert run_cli_here(["ingest", str(first), "--format", "long"], data, env).returncode == 0
    for _ in range(2):  # killed twice in a row: the second write starts from the first one's checksums
        killed = run_cli(["ingest", str(second), "--format", "long"], data, {**env, "RETRAIN_FAULT": f"{point}:kill"})
        assert killed.returncode == -signal.SIGKILL
        checked = run_cli_here(["verify", "--json"], data, env)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert json.loads(checked.stdout.strip().splitlines()[-1])["adopted"] == 0
    assert run_cli_here(["ingest", str(second), "--format", "long"], data, env).returncode == 0
    assert run_cli_here(["verify"], data, env).returncode == 0
    closes = Store(data).scan_bars().collect()["close"].sort()
    assert closes.equals(bars.with_columns(pl.col("close") * 1.01)["close"].sort())


def test_checksum_protocol_accepts_exactly_what_can_be_on_disk(tmp_path):
    """The steps of a commit one by one: after each, the file on disk verifies; a file that
    matches nothing recorded is never blessed by the next write."""
    path = tmp_path / "x.json"
    atomic_write_text("one", path)
    describe = Store(tmp_path).describe

    def ok():
        checksums.forget()
        checksums.verify(path, describe)

    for text in ("two", "three"):  # a kill after the checksums, before the rename, twice
        tmp = stage(path, lambda t, text=text: t.write_text(text))
        checksums.intend(tmp, path)
        tmp.unlink()
        ok()
        assert path.read_text() == "one"
    commit([(stage(path, lambda t: t.write_text("four")), path)])
    ok()
    copied = tmp_path / "copy"  # a copy of the store: other inodes, the checksums still hold
    shutil.copytree(tmp_path, copied, ignore=shutil.ignore_patterns("copy"))
    path = copied / "x.json"
    ok()
    path.write_text("rot!")  # same size, other bytes
    with pytest.raises(CorruptFile):
        ok()
    tmp = stage(path, lambda t: t.write_text("five"))
    checksums.intend(tmp, path)  # the rotten file is not accepted as "previous"
    with pytest.raises(CorruptFile):
        ok()
    os.replace(tmp, path)
    ok()


def test_a_file_just_written_is_trusted_until_it_changes_even_by_one_byte_with_its_times_put_back(tmp_path):
    """What this process has just committed is not hashed again when read (its checksum came
    from its bytes); a change of any kind afterwards is, the modification time put back too."""
    path = tmp_path / "x.json"
    describe = Store(tmp_path).describe
    commit([(stage(path, lambda t: t.write_text("four")), path)])
    assert checksums.check(path) == ("ok", "")
    st = path.stat()
    path.write_text("rot!")  # same size, other bytes
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(CorruptFile):
        checksums.verify(path, describe)


def test_registry_writes_record_checksums_inside_run_folders(tmp_path):
    reg = Registry(tmp_path / "artifacts")
    run_id, folder = reg.create_run({"a": 1}, {"feature_version": "v1", "scope": "NASDAQ", "fingerprint": "ab"},
                                    {"report.html": b"<html></html>"})
    for name in ("model.joblib", "meta.json", "report.html"):
        checksums.forget()
        assert checksums.check(folder / name) == ("ok", "")
    assert reg.run_meta(run_id)["run_id"] == run_id


# ----------------------------------------------------------------- retrain query
def _flip_byte(path: Path, offset: int) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    checksums.forget()


def test_a_query_verifies_the_files_of_the_views_it_names(copy):
    """A statement is checked against the files of the views it names; of the other views DuckDB
    reads only the footers (to bind them), and only those are checked. A count over the bars does
    not wait for (or stop at) a feature file damaged in its data; one that names features stops
    there, and so does any statement when the damage is in the footer."""
    feat = next((copy / "data/features").rglob("*.parquet"))
    _flip_byte(feat, 64)  # in the first column chunk's data
    counted = _invoke(copy, "query", "SELECT count(*) AS n FROM day_symbol", "--format", "csv")
    assert counted.exit_code == 0, counted.output
    assert int(counted.stdout.strip().splitlines()[-1]) > 0
    named = _invoke(copy, "query", "SELECT count(*) FROM features")
    assert named.exit_code == 1 and f"{feat} is corrupted" in named.output
    catalog = _invoke(copy, "query", "SHOW TABLES")  # no view named: every view's files are read, so checked
    assert catalog.exit_code == 1 and f"{feat} is corrupted" in catalog.output
    _flip_byte(feat, 64)  # mended
    _flip_byte(feat, feat.stat().st_size - 40)  # in the footer (the file's metadata)
    footer = _invoke(copy, "query", "SELECT count(*) AS n FROM day_symbol")
    assert footer.exit_code == 1 and f"{feat} is corrupted" in footer.output

"""Settings: retrain.toml, then environment, then command-line options (each overrides the last).

The current feature version lives in retrain.toml (``[features] version = "v1"``), never in code.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrain.errors import RetrainError

CONFIG_ENV = "RETRAIN_CONFIG"
DATA_DIR_ENV = "RETRAIN_DATA_DIR"
ARTIFACTS_DIR_ENV = "RETRAIN_ARTIFACTS_DIR"
DEFAULT_CONFIG = "retrain.toml"
VERSION_RE = re.compile(r"^v[1-9][0-9]*$")


def check_version(version: str) -> str:
    """Return ``version`` if it is of the form ``v<N>`` (N >= 1), else raise a RetrainError."""
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise RetrainError(
            f"invalid feature version {version!r}: versions are written v<N>, e.g. v1, v2",
            hint="fix [features] version in retrain.toml (or the --version option)",
        )
    return version


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    artifacts_dir: Path
    config_path: Path | None
    feature_version: str = "v1"
    default_exchange: str = "NASDAQ"
    toml: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        """One table of retrain.toml (empty when absent)."""
        value = self.toml.get(name, {})
        return value if isinstance(value, dict) else {}


def find_config(explicit: str | os.PathLike | None = None) -> Path | None:
    """The config file: --config, else $RETRAIN_CONFIG, else ./retrain.toml if it exists."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise RetrainError(f"config file not found: {path}", hint="pass an existing file to --config")
        return path
    env = os.environ.get(CONFIG_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise RetrainError(f"config file not found: {path} (from ${CONFIG_ENV})",
                               hint=f"point ${CONFIG_ENV} at an existing retrain.toml or unset it")
        return path
    path = Path(DEFAULT_CONFIG)
    return path if path.is_file() else None


def read_toml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RetrainError(f"{path}: not valid TOML ({exc})", hint="fix the file and rerun") from None


def load_settings(
    data_dir: str | os.PathLike | None = None,
    artifacts_dir: str | os.PathLike | None = None,
    config: str | os.PathLike | None = None,
) -> Settings:
    """Resolve settings. Store paths: option > $RETRAIN_DATA_DIR / $RETRAIN_ARTIFACTS_DIR >
    retrain.toml [store] > ``data/`` and ``artifacts/`` in the current directory."""
    path = find_config(config)
    toml = read_toml(path)
    store = toml.get("store", {}) if isinstance(toml.get("store"), dict) else {}
    features = toml.get("features", {}) if isinstance(toml.get("features"), dict) else {}
    run = toml.get("run", {}) if isinstance(toml.get("run"), dict) else {}
    data = data_dir or os.environ.get(DATA_DIR_ENV) or store.get("data_dir") or "data"
    artifacts = artifacts_dir or os.environ.get(ARTIFACTS_DIR_ENV) or store.get("artifacts_dir") or "artifacts"
    version = check_version(features.get("version", "v1"))
    exchange = str(run.get("exchange", "NASDAQ"))
    return Settings(
        data_dir=Path(data),
        artifacts_dir=Path(artifacts),
        config_path=path,
        feature_version=version,
        default_exchange=exchange,
        toml=toml,
    )


def bump_version(path: Path | None, today: str, write: bool = True) -> tuple[str, str]:
    """vN -> vN+1 in retrain.toml's [features] version, with a dated history comment above it.
    Returns (old, new). The file is rewritten atomically; comments and layout are kept. With
    ``write=False`` only checks that the file can be bumped and returns what it would do."""
    from retrain.store import atomic_write_text

    if path is None or not Path(path).is_file():
        raise RetrainError("--bump-version needs a retrain.toml to record the new version in",
                           hint="create one (copy the project's retrain.toml) or pass --config")
    text = Path(path).read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    section, hit = None, None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped.strip("[]").strip()
        elif section == "features" and re.match(r"^version\s*=", stripped):
            hit = i
            break
    if hit is None:
        raise RetrainError(f"{path}: no `version = \"vN\"` line under [features]",
                           hint='add `[features]` with `version = "v1"` and rerun')
    old = check_version(read_toml(Path(path)).get("features", {}).get("version", ""))
    new = f"v{int(old[1:]) + 1}"
    if not write:
        return old, new
    indent = lines[hit][: len(lines[hit]) - len(lines[hit].lstrip())]
    lines[hit] = f'{indent}version = "{new}"\n'
    lines.insert(hit, f"{indent}# - {new}: bumped by `retrain run --bump-version` ({today}); {old} kept on disk\n")
    atomic_write_text("".join(lines), Path(path))
    return old, new

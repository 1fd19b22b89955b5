"""Named DuckDB queries, kept as files in the top-level ``sql/`` folder (package ``retrain.sql``)."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def load(name: str) -> str:
    """The text of ``sql/<name>.sql``."""
    return resources.files("retrain.sql").joinpath(f"{name}.sql").read_text(encoding="utf-8")

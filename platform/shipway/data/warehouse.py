"""dbt's outputs, published to Delta.

dbt-duckdb reads Delta through its delta plugin but cannot write it, so dbt builds in the
DuckDB file and Shipway publishes the models marked `meta: {delta_table: <name>}` as Delta
tables, where Feast and every other reader find them, versioned.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb

from shipway.data.lake import TableInfo, overwrite_table


def delta_outputs(manifest: Mapping[str, Any]) -> dict[str, str]:
    """dbt model name -> Delta table name, for every model marked for publication."""
    return {
        node["name"]: node["config"]["meta"]["delta_table"]
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and node["config"].get("meta", {}).get("delta_table")
    }


def publish_to_delta(warehouse: Path, relation: str, table_path: Path) -> TableInfo:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        # UTC so Arrow carries tz-aware timestamps: naive ones raise the Delta protocol.
        con.execute("set TimeZone = 'UTC'")
        frame = con.table(relation).arrow().read_all()
    finally:
        con.close()
    return overwrite_table(table_path, frame.to_pandas(), {"dbt_model": relation})

"""instrument_metadata against a local OKX-shaped HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import orjson
import pytest
from dagster import materialize

from collector_tests.harness import reference_file
from l2_lake.format import layout
from l2_pipeline.assets.lake import instrument_metadata
from l2_pipeline_tests.instances import DagsterInstances
from l2_pipeline_tests.lake_factory import BTC, ETH, lake_resource

BODY = reference_file("nautilus_http_get_instruments_swap.json").read_bytes()


class FakeOkx:
    """Serves /api/v5/public/instruments?instType=SWAP from `body`; counts requests."""

    def __init__(self) -> None:
        self.body = BODY
        self.paths: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.paths.append(self.path)
                ok = self.path == "/api/v5/public/instruments?instType=SWAP"
                payload = outer.body if ok else b'{"code":"51000","msg":"bad path","data":[]}'
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def change(self, inst_id: str, **fields: str) -> None:
        obj = orjson.loads(self.body)
        for item in obj["data"]:
            if item["instId"] == inst_id:
                item.update(fields)
        self.body = orjson.dumps(obj)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def okx() -> Iterator[FakeOkx]:
    server = FakeOkx()
    yield server
    server.close()


def run(instances: DagsterInstances, lake) -> dict:
    with instances.ephemeral() as instance:
        result = materialize([instrument_metadata], instance=instance, resources={"lake": lake})
        assert result.success
        (mat,) = result.get_asset_materialization_events()
        return {k: v.value for k, v in mat.materialization.metadata.items()}


def history(data_dir, inst_id) -> list[dict]:
    return [orjson.loads(line) for line in layout.meta_history_path(data_dir, inst_id).read_bytes().splitlines()]


def test_writes_meta_and_history_and_reports_changes(tmp_path, okx, dagster_instances):
    lake = lake_resource(tmp_path, instruments=[BTC, ETH, "DOGE-USDT-SWAP"], rest_url=okx.url)
    first = run(dagster_instances, lake)
    assert okx.paths == ["/api/v5/public/instruments?instType=SWAP"]
    assert first["instruments"] == 2 and first["missing"] == "DOGE-USDT-SWAP" and first["changes"] == 0
    assert first["new_instruments"] == f"{BTC}, {ETH}"
    latest = orjson.loads(layout.meta_path(tmp_path, BTC).read_bytes())
    assert latest["tickSz"] == "0.1" and latest["ctVal"] == "0.01" and "fetched_at" in latest
    assert len(history(tmp_path, BTC)) == 1

    second = run(dagster_instances, lake)  # nothing but fetched_at differs: no history line
    assert second["changes"] == 0 and len(history(tmp_path, BTC)) == 1

    okx.change(BTC, tickSz="0.5", ctVal="0.001")
    third = run(dagster_instances, lake)
    assert third["changes"] == 2 and third["important_changes"] == 2
    assert "| BTC-USDT-SWAP | tickSz | 0.1 | 0.5 |" in third["change_table"]
    versions = history(tmp_path, BTC)
    assert [v["tickSz"] for v in versions] == ["0.1", "0.5"] and len(history(tmp_path, ETH)) == 1
    assert orjson.loads(layout.meta_path(tmp_path, BTC).read_bytes())["ctVal"] == "0.001"


def test_unreachable_or_unlisted_fails_the_run(tmp_path, okx, dagster_instances):
    lake = lake_resource(tmp_path, instruments=["DOGE-USDT-SWAP"], rest_url=okx.url)
    with dagster_instances.ephemeral() as instance:
        result = materialize([instrument_metadata], instance=instance, resources={"lake": lake}, raise_on_error=False)
    assert not result.success
    lake = lake_resource(tmp_path, rest_url=okx.url + "/nowhere", rest_timeout_seconds=2)
    with dagster_instances.ephemeral() as instance:
        result = materialize([instrument_metadata], instance=instance, resources={"lake": lake}, raise_on_error=False)
    assert not result.success

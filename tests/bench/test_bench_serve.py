"""`medassist bench serve` end to end on tiny bundles (debug profile: a few requests; the numbers mean nothing)."""

from __future__ import annotations

import json

import pytest
from serve_bundles import make_image_bundle, make_text_bundle

from medassist.cli import main


@pytest.mark.slow
def test_bench_serve_prints_its_table(tmp_path, capsys) -> None:
    image, text = make_image_bundle(tmp_path / "x"), make_text_bundle(tmp_path / "r")
    argv = ["bench", "serve", "--profile", "debug", "--image-bundle", str(image), "--text-bundle", str(text)]
    assert main([*argv, "--out", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "micro-batching" in out and "one per call" in out and "errors: 0 in 800 requests" in out
    assert "API keys, image (json), 1 worker(s), micro-batching:" in out  # with against without, from the medians
    assert "FHIR answers, report, 1 worker(s), micro-batching, auth api-key:" in out  # FHIR against JSON
    (run,) = (tmp_path / "runs").iterdir()
    rows = json.loads((run / "metrics.json").read_text())["rows"]
    # 2 modes x 2 kinds x 2 loads x 2 ways of checking callers x 2 answer formats x 2 rounds
    assert len(rows) == 64 and all(r["errors"] == 0 and r["answered"] == r["requests"] for r in rows)
    assert {r["format"] for r in rows} == {"json", "fhir"}
    assert {r["auth"] for r in rows} == {"off", "api-key"} and {r["round"] for r in rows} == {0, 1}
    for word in ("Roe", "edema"):  # the server's log holds no report text
        assert word not in (run / "server.log").read_text()

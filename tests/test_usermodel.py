"""The user's own model: ``.tflite`` on the engine exact with TensorFlow Lite Micro (every tensor the engine
writes and every host tensor after it), PyTorch factories from the command line, refusals in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hw.isa import EngineConfig
from quant.arith import requantize
from quant.tflite.lower import AVG_TAP_WEIGHT, average_multiplier
from sw.shared import skip_without_shared

REPO = Path(__file__).resolve().parents[1]
PERSON_DIR = "models/person_detect"
PERSON_MODEL = f"{PERSON_DIR}/person_detect.tflite"
PICTURES = ("person.bmp", "no_person.bmp")


def _cli(*args, timeout=900):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "sw.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=timeout)


@pytest.mark.parametrize("n", [1, 2, 4, 6, 9, 16, 25, 36, 49])
def test_average_multiplier_rounds_every_sum_as_tflite(n):
    """Every sum of n int8 values: the engine's requantizer on 64 * sum equals TFLite's average (Python ints)."""
    m0, shift = average_multiplier(n)
    for s in range(-128 * n, 127 * n + 1):
        want = (s + n // 2) // n if s > 0 else -((-(s - n // 2)) // n)
        assert requantize(AVG_TAP_WEIGHT * s, m0, shift, 0) == want, (n, s)


def _micro_reference(root, picture):
    from .test_tflite_import import _person_input, micro_all_tensors

    model_bytes = (root / PERSON_MODEL).read_bytes()
    x = _person_input(root, picture)
    ref, outputs = micro_all_tensors(model_bytes, [x])
    return x, ref, outputs


def _check_person_detect(backend):
    pytest.importorskip("tflite_micro")
    root = skip_without_shared(PERSON_MODEL, *(f"{PERSON_DIR}/{p}" for p in PICTURES))
    from sw.usermodel import load_input, load_model, run_model

    model = load_model(str(root / PERSON_MODEL))
    graph = model.lowered.graph
    index = {name: t.index for name, t in graph.tensors.items()}
    xs = [load_input(root / PERSON_DIR / p, model.input_shape, model.preprocess) for p in PICTURES]
    runs = run_model(model, xs, backend=backend, config=EngineConfig())
    on_engine = {op.output for op in model.lowered.engine_ops}
    assert len(on_engine) == 29 and [op.tflite_op for op in model.lowered.host] == ["RESHAPE", "SOFTMAX"]
    scores = []
    for picture, x, r in zip(PICTURES, xs, runs, strict=True):
        x_ref, ref, outputs = _micro_reference(root, picture)
        np.testing.assert_array_equal(x.reshape(-1), x_ref.reshape(-1))   # the CLI's preprocessing is DATA.md's
        assert r.exact is not None and all(r.exact.values()), f"{picture}: layers differ from golden: {r.exact}"
        written = [n for n in r.tensors if n in on_engine]
        assert set(written) == on_engine
        bad = []
        for name in [op.output for op in graph.operators]:
            ours, theirs = r.tensors[name], ref[index[name]]
            if not np.array_equal(ours, theirs):
                pos = tuple(int(v) for v in np.argwhere(ours != theirs)[0])
                bad.append(f"{name}: {int((ours != theirs).sum())} differ, first at {pos}: engine "
                           f"{int(ours[pos])}, tflite-micro {int(theirs[pos])}")
        assert not bad, f"{picture} on {backend}:\n" + "\n".join(bad)
        (out,) = r.outputs.values()
        np.testing.assert_array_equal(out, outputs[0])
        scores.append(out.reshape(-1).tolist())
    assert scores[0] != scores[1] and scores[1][0] > scores[1][1]
    return runs


@pytest.mark.shared
def test_person_detect_on_the_golden_machine_equals_tflite_micro():
    runs = _check_person_detect("golden")
    steps = runs[0].report.rows
    assert sum(r.macs for r in steps) > 7_000_000


@pytest.mark.shared
@pytest.mark.verilator
def test_person_detect_in_verilator_equals_tflite_micro():
    runs = _check_person_detect("verilator")
    rep = runs[0].report
    print("\n" + rep.table())
    assert rep.cycles > 0 and rep.bit_exact


@pytest.mark.shared
def test_cli_run_tflite_prints_the_two_scores():
    root = skip_without_shared(PERSON_MODEL, f"{PERSON_DIR}/person.bmp")
    r = _cli("run", str(root / PERSON_MODEL), str(root / PERSON_DIR / "person.bmp"), "--quiet")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "every engine layer equal to the golden model" in lines[0]
    assert lines[1].strip().startswith("MobilenetV1/Predictions/Reshape_1 [1, 2]: [")


@pytest.mark.shared
def test_cli_compile_tflite_lists_engine_and_host_operators():
    root = skip_without_shared(PERSON_MODEL)
    r = _cli("compile", str(root / PERSON_MODEL))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("[engine]") == 29 and r.stdout.count("[host]") == 2
    assert "host from operator 29: operator 29 (RESHAPE)" in r.stdout
    assert "dw 3x3/2" in r.stdout and "commands" in r.stdout


def _pictures(folder: Path, n: int, seed: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        a = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
        p = folder / f"pic{i}.png"
        Image.fromarray(a).save(p)
        paths.append(p)
    return paths


def test_cli_run_pytorch_factory_with_7x7_and_zeropad(tmp_path):
    calib = _pictures(tmp_path / "calib", 4, 1)
    (pic,) = _pictures(tmp_path / "in", 1, 2)
    r = _cli("run", "sw.models.examples:tf_style_net", str(pic), "--calibrate", str(calib[0].parent),
             "--input-shape", "3,64,64", "--top", "3", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "every engine layer equal to the golden model" in r.stdout
    assert "top 3:" not in r.stdout   # 10 classes: all printed
    r = _cli("compile", "sw.models.examples:tf_style_net", "--calibrate", str(calib[0].parent),
             "--input-shape", "3,64,64")
    assert r.returncode == 0, r.stderr
    assert "7x7/2 3->32" in r.stdout and "packed" in r.stdout    # the 7x7/2 stem, pixel pairs packed
    assert "1x3/1" in r.stdout and "3x1/1" in r.stdout and "5x5/2" in r.stdout


def test_pytorch_factory_outputs_equal_the_golden_model(tmp_path):
    from quant import golden
    from sw.usermodel import load_input, load_model, run_model

    calib = _pictures(tmp_path / "calib", 3, 3)
    model = load_model("sw.models.examples:tf_style_net", calibrate=str(calib[0].parent), input_shape=(3, 64, 64))
    g = model.qgraph
    assert g["stem"].padding == (2, 2, 3, 3) and g["down"].padding == (1, 1, 2, 2)
    x = load_input(calib[0], model.input_shape, model.preprocess)
    (run,) = run_model(model, [x])
    want = golden.infer(g, x[None])[0].reshape(-1).numpy()
    (got,) = run.outputs.values()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("factory,message", [
    ("tests.factories:with_sigmoid", "kindling: error: layer 1: module Sigmoid is not supported"),
    ("tests.factories:with_grouped_conv", "kindling: error: layer 2: grouped convolution (groups=2) is not supported "
                                          "(only depthwise: groups = input channels = output channels)"),
    ("tests.factories:nosuch", "kindling: error: tests.factories:nosuch: tests.factories has no function 'nosuch'"),
])
def test_cli_run_refuses_an_unsupported_layer_in_one_line(tmp_path, factory, message):
    (pic,) = _pictures(tmp_path, 1, 4)
    r = _cli("run", factory, str(pic), "--input-shape", "3,16,16")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip().splitlines() == [message], r.stderr
    assert r.stdout == ""


def test_cli_compile_lists_every_refusal_and_run_the_first(tmp_path):
    r = _cli("compile", "tests.factories:with_two_refusals", "--input-shape", "4,12,12")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == ["kindling: refused: sigmoid: function sigmoid is not supported",
                                     "kindling: refused: b: grouped convolution (groups=2) is not supported (only "
                                     "depthwise: groups = input channels = output channels)"], r.stderr
    (pic,) = _pictures(tmp_path, 1, 5)
    r = _cli("run", "tests.factories:with_two_refusals", str(pic), "--input-shape", "4,12,12", "--preprocess", "raw")
    assert r.returncode == 2
    assert r.stderr.splitlines() == ["kindling: error: sigmoid: function sigmoid is not supported (and 1 more: "
                                     "kindling compile tests.factories:with_two_refusals lists them)"], r.stderr

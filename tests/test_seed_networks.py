"""The seed documents' networks on the engine in Verilator, every layer bit-exact with the golden model:
SqueezeNet 1.0, SqueezeNext and MobileNetV1-SSD (reduced variants in `make test`, the whole networks under
the slow marker)."""

import pytest
import torch

from hw.isa import EngineConfig, Opcode, unpack_command
from sw.models.seed import quantized_seed, seed_input

pytestmark = pytest.mark.verilator


def _run(name, reduced):
    from sw.networks import Runner

    qg, shape = quantized_seed(name, reduced)
    torch.set_num_threads(1)
    with Runner(name, "verilator", EngineConfig(), qgraph=qg, progress=False) as r:
        res = r.run_float(seed_input(shape, 7))
    rep = res.report
    print("\n" + rep.table())
    bad = {k: res.run.first_mismatch.get(k) for k, ok in res.run.exact.items() if not ok}
    assert not bad, f"{name}: layers that differ from the golden model (position, engine, golden): {bad}"
    assert rep.bit_exact and rep.cycles > rep.macs / EngineConfig().macs_per_cycle
    return r.program, rep, res


def _kernels(program):
    out = set()
    for s in program.steps:
        op, c = unpack_command(s.command)
        if op == Opcode.CONV:
            out.add((c.kh, c.kw, c.sy, c.sx))
    return out


@pytest.mark.parametrize("name", ["squeezenet10", "squeezenext"])
def test_reduced_seed_network_is_bit_exact(name):
    program, rep, _ = _run(name, reduced=True)
    kernels = _kernels(program)
    assert (7, 4, 2, 1) in kernels        # the 7x7/2 stem over pixel pairs
    if name == "squeezenext":
        assert {(3, 1, 1, 1), (1, 3, 1, 1)} <= kernels
        assert sum(1 for r in rep.rows if r.layer.endswith(".add")) == 7


def _check_ssd(program, rep, res, side):
    from sw.models.mobilenet_ssd import decode_detections

    dw = [r for r in rep.rows if r.detail.startswith("dw")]
    assert len(dw) == 13 + 4 + 12     # backbone, extras, heads
    assert len(res.outputs) == 12
    dets = decode_detections([o.numpy() for o in res.outputs], side, (640, 480), conf_threshold=0.0, top_k=50)
    assert dets and all(d.score >= 0 for d in dets)   # boxes decoded and suppressed on the host


def test_reduced_mobilenet_ssd_is_bit_exact():
    program, rep, res = _run("mobilenet_ssd", reduced=True)
    _check_ssd(program, rep, res, 64)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["squeezenet10", "squeezenext", "mobilenet_ssd"])
def test_whole_seed_network_is_bit_exact(name):
    program, rep, res = _run(name, reduced=False)
    assert rep.macs > {"squeezenet10": 800e6, "squeezenext": 200e6, "mobilenet_ssd": 1e9}[name]
    if name == "mobilenet_ssd":
        _check_ssd(program, rep, res, 300)

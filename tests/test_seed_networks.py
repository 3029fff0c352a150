"""The seed documents' networks on the engine in Verilator, every layer bit-exact with the golden model:
SqueezeNet 1.0 and SqueezeNext (reduced variants in `make test`, the whole networks under the slow marker)."""

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
    return r.program, rep


def _kernels(program):
    out = set()
    for s in program.steps:
        op, c = unpack_command(s.command)
        if op == Opcode.CONV:
            out.add((c.kh, c.kw, c.sy, c.sx))
    return out


@pytest.mark.parametrize("name", ["squeezenet10", "squeezenext"])
def test_reduced_seed_network_is_bit_exact(name):
    program, rep = _run(name, reduced=True)
    kernels = _kernels(program)
    assert (7, 4, 2, 1) in kernels        # the 7x7/2 stem over pixel pairs
    if name == "squeezenext":
        assert {(3, 1, 1, 1), (1, 3, 1, 1)} <= kernels
        assert sum(1 for r in rep.rows if r.layer.endswith(".add")) == 7


@pytest.mark.slow
@pytest.mark.parametrize("name", ["squeezenet10", "squeezenext"])
def test_whole_seed_network_is_bit_exact(name):
    program, rep = _run(name, reduced=False)
    assert rep.macs > (800e6 if name == "squeezenet10" else 200e6)

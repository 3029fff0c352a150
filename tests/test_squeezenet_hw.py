"""Real SqueezeNet 1.1 Fire modules in Verilator, bit-exact with the golden model.

The pretrained weights, a real photograph, the quantized network's own
activations as the module's input. `make test` runs a 13x13 module (fire9) and
the band-tiled, pool-fused fire4; `make sim` runs all eight.
"""

import pytest
import torch

from hw.isa import EngineConfig
from quant import golden

pytestmark = [pytest.mark.verilator, pytest.mark.shared]


@pytest.fixture(scope="module")
def fire_session(q_squeezenet_imagenet):
    from hw.engine import Engine
    from sim.verilator_backend import VerilatorBackend
    from sw.compiler import compile_graph
    from sw.driver import Driver
    from sw.runtime import Session
    from sw.shared import imagenet_preprocess, shared_dir

    qg = q_squeezenet_imagenet
    cfg = EngineConfig()
    prog = compile_graph(qg, cfg, reuse_memory=False)
    torch.set_num_threads(1)
    x = imagenet_preprocess(shared_dir() / "images/coco_cat.jpg")
    tensors = golden.run(qg, golden.quantize_input(x, qg.qparams(qg.inputs[0])))
    with VerilatorBackend(Engine, cfg) as t:
        yield Session(prog, Driver(t, cfg)), tensors, qg


@pytest.mark.parametrize("module", ["fire9", "fire4"])
def test_real_fire_module_is_bit_exact(fire_session, module):
    from sw.models.squeezenet import FIRE_LAYERS
    from sw.runtime import run_layer

    session, tensors, qg = fire_session
    r = run_layer(session, FIRE_LAYERS[module], tensors)
    assert r.bit_exact, (f"{module}: {r.mismatches} outputs differ; first (channel, y, x, engine, golden): "
                         f"{r.first_mismatches}")
    assert r.macs > 17_000_000 and r.cycles > r.macs / EngineConfig().macs_per_cycle


#: The memory stall probability of the stall tests (per cycle, for requests and for answers).
STALLS = 0.2


def _stalled_cycles(transport, run):
    """Run ``run()`` and return its result with the cycles the simulated memory stalled meanwhile."""
    before = transport.mem_info()["stalled"]
    result = run()
    return result, transport.mem_info()["stalled"] - before


def test_real_fire_module_under_memory_stalls(fire_session):
    """fire9 with 20% random memory stalls: bit-exact, and the stalls happened (counted, and cost cycles)."""
    from sw.models.squeezenet import FIRE_LAYERS
    from sw.runtime import run_layer

    session, tensors, _ = fire_session
    t = session.driver.t
    layer = FIRE_LAYERS["fire9"]
    t.set_stalls(0.0)
    free, free_stalled = _stalled_cycles(t, lambda: run_layer(session, layer, tensors))
    t.set_stalls(STALLS)
    try:
        r, stalled = _stalled_cycles(t, lambda: run_layer(session, layer, tensors))
    finally:
        t.set_stalls(0.0)
    for name, res in (("stall-free", free), ("stalled", r)):
        assert res.bit_exact, (f"fire9 {name}: {res.mismatches} outputs differ; first (channel, y, x, engine, "
                               f"golden): {res.first_mismatches}")
    assert free_stalled == 0, f"{free_stalled} stalled cycles counted without stalls"
    assert stalled > 0 and r.cycles > free.cycles, (
        f"the stalls did not happen: {stalled} stalled cycles, {r.cycles} cycles vs {free.cycles} stall-free")
    print(f"fire9 under {STALLS:.0%} memory stalls: {r.cycles} cycles ({stalled} memory cycles stalled) vs "
          f"{free.cycles} stall-free, bit-exact")


@pytest.mark.slow
def test_squeezenet_whole_network_under_memory_stalls(shared):
    """The whole network with 20% random memory stalls: every layer bit-exact, the same answer, stalls happened.

    The same program on the same simulator runs the picture stall-free first, then under stalls.
    """
    from sw.networks import Runner, classify

    with Runner("squeezenet", "verilator", EngineConfig(), progress=False) as runner:
        t = runner.transport
        free, free_top = classify(runner, shared / "images/coco_cat.jpg")
        t.set_stalls(STALLS)
        (res, top), stalled = _stalled_cycles(t, lambda: classify(runner, shared / "images/coco_cat.jpg"))
    for name, run in (("stall-free", free.run), ("stalled", res.run)):
        assert len(run.exact) == 11 and all(run.exact.values()), f"{name}: {run.first_mismatch}"
    assert top[0][0] == free_top[0][0] == 282, (top, free_top)
    for name in res.run.tensors:
        assert (res.run.tensors[name] == free.run.tensors[name]).all(), f"{name} differs under stalls"
    assert stalled > 0 and res.run.cycles > free.run.cycles, (
        f"the stalls did not happen: {stalled} stalled cycles, {res.run.cycles} cycles vs {free.run.cycles}")
    print(f"SqueezeNet 1.1 under {STALLS:.0%} memory stalls: {res.run.cycles} cycles ({stalled} memory cycles "
          f"stalled) vs {free.run.cycles} stall-free; wall {res.run.wall_s:.1f} s vs {free.run.wall_s:.1f} s")

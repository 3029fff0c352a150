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

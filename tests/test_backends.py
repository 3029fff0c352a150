"""The backend registry: every name resolves, bad names and options fail in one line, a backend opens and runs."""

import inspect

import numpy as np
import pytest

from hw.isa import ENGINE_ID, EngineConfig, Reg
from sw.backends import BACKENDS, PORT_SCHEMES, _load, backend_names, open_backend, open_port
from sw.backends.serial import LinkError
from sw.transport import Transport


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_backend_resolves_to_something_that_opens_a_transport(name):
    factory = BACKENDS[name].load()
    assert callable(factory)
    if inspect.isclass(factory):
        assert issubclass(factory, Transport), f"{name}: {factory} is not a Transport"
    assert BACKENDS[name].summary


@pytest.mark.parametrize("scheme", list(PORT_SCHEMES))
def test_every_port_scheme_resolves(scheme):
    assert callable(_load(PORT_SCHEMES[scheme]))


def test_unknown_backend_is_one_line_naming_the_choices():
    with pytest.raises(ValueError) as exc:
        open_backend("fpga")
    assert str(exc.value) == f"unknown backend 'fpga'; choose from {', '.join(backend_names())}"
    assert "\n" not in str(exc.value)


def test_an_option_the_backend_does_not_take_is_one_line():
    with pytest.raises(ValueError, match=r"^backend 'golden': .*stalls") as exc:
        open_backend("golden", stalls=0.1)
    assert "\n" not in str(exc.value)


def test_golden_backend_opens_and_round_trips_memory():
    cfg = EngineConfig()
    data = np.random.default_rng(1).integers(0, 256, 5 * cfg.rows, dtype=np.uint8).tobytes()
    with open_backend("golden", config=cfg, mem_words=1024) as t:
        assert t.read_reg(Reg.ID) == ENGINE_ID
        t.write_mem(17, data)
        assert t.read_mem(17, 5) == data


def test_a_device_port_is_left_to_pyserial():
    assert open_port("/dev/ttyUSB1") == "/dev/ttyUSB1"
    obj = object()
    assert open_port(obj) is obj


def test_an_unknown_simulated_board_names_the_port():
    with pytest.raises(LinkError, match=r"^sim:bogus: no such simulated board; known: sim:"):
        open_port("sim:bogus")

"""Shared fixtures: seeded random generators, the shared-data skip, quantized SqueezeNet 1.1.

Also the hypothesis profiles and the count of Verilator-compared property examples:

``ci`` (the default)
    Derandomized (the same examples on every run, no example database), 200
    examples per property test: with the engine property test's two engine
    sizes, 400 shapes compared in Verilator per `make test`.
``deep`` (`make test-deep`, or ``--hypothesis-profile=deep``)
    Randomized, 2,500 examples per property test (5,000 Verilator shapes).

``KINDLING_HYPOTHESIS_PROFILE`` selects a profile too. The session summary
prints ``verilator property examples compared: N``, counted where the test
calls the ``count_compared`` fixture, after its exact comparisons; under
pytest-xdist each worker counts its own and hands its count to the controller
(``workeroutput``), which adds them up.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

from sw.shared import skip_without_shared

settings.register_profile("ci", derandomize=True, max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("deep", derandomize=False, max_examples=2500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
# --hypothesis-profile (hypothesis's pytest plugin, at configure time) overrides this.
settings.load_profile(os.environ.get("KINDLING_HYPOTHESIS_PROFILE", "ci"))

#: Key of the count of Verilator-compared property examples, in ``config.stash`` and in xdist's workeroutput.
COMPARED = "verilator_property_compared"
_compared_key = pytest.StashKey[int]()


@pytest.fixture
def count_compared(request):
    """``count_compared()`` adds one Verilator-compared property example; call it after the exact comparison."""
    config = request.config
    config.stash.setdefault(_compared_key, 0)  # the summary line appears once a property test has run

    def count():
        config.stash[_compared_key] = config.stash.get(_compared_key, 0) + 1

    return count


def pytest_sessionfinish(session):
    """In an xdist worker: hand this worker's count to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None and _compared_key in session.config.stash:
        workeroutput[COMPARED] = session.config.stash[_compared_key]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """In the xdist controller: add a finished worker's count."""
    n = getattr(node, "workeroutput", {}).get(COMPARED)
    if n is not None:
        node.config.stash[_compared_key] = node.config.stash.get(_compared_key, 0) + n


def pytest_terminal_summary(terminalreporter, config):
    if hasattr(config, "workeroutput") or _compared_key not in config.stash:
        return
    profile = settings.get_current_profile_name()
    terminalreporter.write_line(f"verilator property examples compared: {config.stash.get(_compared_key, 0)} "
                                f"(hypothesis profile {profile})")

#: One seed for every test's random generators, so failures reproduce.
SEED = 20240607


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Seed torch's global generator for every test; one intra-op thread (xdist runs 2 workers on 2 cores)."""
    torch.manual_seed(SEED)
    torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    """A numpy generator seeded identically for every test."""
    return np.random.default_rng(SEED)


@pytest.fixture
def shared():
    """The shared data directory; skips the test when it is absent."""
    return skip_without_shared()


@pytest.fixture(scope="session")
def squeezenet():
    """The pretrained float SqueezeNet 1.1 (skips without the shared weights)."""
    skip_without_shared("models/squeezenet1_1/weights")
    from sw.models import load_squeezenet11

    return load_squeezenet11()


@pytest.fixture(scope="session")
def q_squeezenet_imagenet(squeezenet):
    """SqueezeNet 1.1 quantized with the ImageNet calibration set (people_*.jpg, not the evaluated images)."""
    skip_without_shared(*(f"images/people_{i}.jpg" for i in range(1, 5)))
    from sw.models.squeezenet import quantize_squeezenet11

    torch.set_num_threads(1)
    return quantize_squeezenet11("imagenet", squeezenet)


@pytest.fixture(scope="session")
def q_squeezenet_noise(squeezenet):
    """SqueezeNet 1.1 quantized for the ONNX test sets' inputs (calibrated on seeded noise in [0, 255))."""
    from sw.models.squeezenet import quantize_squeezenet11

    torch.set_num_threads(1)
    return quantize_squeezenet11("noise255", squeezenet)

"""Shared fixtures: seeded random generators, the shared-data skip, quantized SqueezeNet 1.1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sw.shared import skip_without_shared

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

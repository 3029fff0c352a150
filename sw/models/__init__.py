"""Float model definitions that load the pretrained weights of the shared data."""

from .squeezenet import SqueezeNet11, load_squeezenet11

__all__ = ["SqueezeNet11", "load_squeezenet11"]

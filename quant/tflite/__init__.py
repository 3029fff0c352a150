"""TFLite int8 import: a ``.tflite`` model with TFLite's own integer arithmetic, exact on the host.

:func:`import_tflite` reads the flatbuffer (the PyPI ``tflite`` schema package) and maps CONV_2D,
DEPTHWISE_CONV_2D, FULLY_CONNECTED (a 1x1 convolution), ADD, AVERAGE_POOL_2D, MAX_POOL_2D, MEAN,
PAD, CONCATENATION, RESHAPE, SOFTMAX and TRANSPOSE, taking every scale and zero point as stored;
:func:`run` executes the result and returns every tensor by name. The arithmetic is
tflite-micro's reference kernels' (:mod:`quant.tflite.arith`, :mod:`quant.tflite.ops`), so
results equal tflite-micro's exactly. See docs/QUANT.md, "TFLite import".
"""

from .executor import outputs, run
from .importer import SUPPORTED, TFLiteGraph, import_tflite
from .reader import TFLiteImportError

__all__ = ["SUPPORTED", "TFLiteGraph", "TFLiteImportError", "import_tflite", "outputs", "run"]

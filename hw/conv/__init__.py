"""The convolution unit and its parts (see :mod:`hw.conv.unit` for the dataflow).

========================  ===========================  ==========================================
component                 file                         job
========================  ===========================  ==========================================
:class:`ConvUnit`         ``hw/conv/unit.py``          wires the parts below; the engine's view
:class:`ConvPlanner`      ``hw/conv/plan.py``          loop bounds and address steps of an op
:class:`AddressGenerator` ``hw/conv/feeder.py``        walks passes, taps, pixels; feeds the array
:class:`WeightReader`     ``hw/conv/weights.py``       weight blob from memory into a FIFO
:class:`WeightRouter`     ``hw/conv/weights.py``       parameters to the banks, tiles to the array
:class:`AccumulatorBanks` ``hw/conv/accumulate.py``    two int32 banks; drains a bank to requant
========================  ===========================  ==========================================
"""

from .accumulate import AccumulatorBanks
from .feeder import AddressGenerator
from .plan import ConvOp, ConvPlanner, small_mul
from .unit import ConvUnit
from .weights import WeightReader, WeightRouter

__all__ = ["ConvOp", "ConvUnit", "ConvPlanner", "AddressGenerator", "WeightReader", "WeightRouter",
           "AccumulatorBanks", "small_mul"]

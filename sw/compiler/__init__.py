"""The scheduler: a quantized network (:class:`quant.quantize.QGraph`) -> memory plan and command list.

What runs on the engine
    every convolution (1x1..7x7, stride 1..4, asymmetric padding up to 7, dilation up to 7), the
    Fire module as one command per band (squeeze kept on chip), max pools
    (fused into the next layer's load when that layer is their only reader,
    standalone otherwise), global average pools, concats (a placement: every
    part is written straight into its slot), and the RFB residual add (a
    :class:`~quant.quantize.QDualConv`: one convolution over the two inputs,
    placed side by side in memory). The host keeps only what follows the
    integer graph (layout ops, softmax, decoding).

How a layer is tiled
    over space, in bands of output rows sized so that the band's input (and,
    for a Fire module, its squeeze output) fits the activation buffer; over
    channels, inside the engine (output tiles of ``cols`` channels, pixel runs
    of ``acc_depth``). Bands are as equal as possible; a row of halo is loaded
    (and squeezed) again at each band edge. Buffer sizes come from the
    :class:`~hw.isa.EngineConfig`, so the schedule follows the configuration.

Memory
    every stored tensor is a *root* with its own region, or a part of one
    (a concat member, a half of a residual add's input) at a word offset with
    the root's pixel stride. Regions are reused once their last reader has
    run. Weight blobs (:func:`hw.layout.pack_conv_blob`, input channels
    remapped to the physical lanes of the tensor they read) come first.

Anything the engine cannot run is refused here, before any command exists,
with a :class:`CompileError` naming the layer and the reason.

The package by what it holds: :mod:`.program` (the result), :mod:`.planning`
(graph -> operations), :mod:`.memory` (placement and allocation),
:mod:`.emit` (operations -> commands and blobs), :mod:`.packing` (pixel-pair
packing), :mod:`.compile` (:func:`compile_graph`, the stages in order).
"""

from .compile import compile_graph
from .packing import pack_pixel_pairs, pair_packed_conv
from .program import MAX_CB, MAX_DIM, CompileError, Program, Root, Step, TensorView

__all__ = ["CompileError", "Program", "Step", "TensorView", "Root", "compile_graph", "pack_pixel_pairs",
           "pair_packed_conv", "MAX_CB", "MAX_DIM"]

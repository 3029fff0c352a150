"""Running a compiled program on a board whose memory is smaller than the program's, and what it costs.

A :class:`~sw.compiler.Program` addresses one flat memory holding every weight
blob and activation (SqueezeNet 1.1: about 1.6 MB). A board has far less (the
iCEBreaker 128 KiB). :class:`StagedTransport` is a
:class:`~sw.transport.Transport` over the board's own that keeps a host-side
image of the program's whole memory: the driver, :class:`~sw.runtime.Session`
and :func:`~sw.runtime.run_network` write to and read from the image as if it
were the engine's memory, and a run (``CTRL.START``) is carried out in
*groups* of consecutive commands whose memory fits the board:

1. what the group reads (``Step.reads``: input band, weight blobs) and no
   earlier command of the group writes is uploaded from the image;
2. the group's commands, relocated (every address field moved into the
   board's range, and checked again with :func:`hw.isa.check_command`), are
   written at the top of the board's memory and run;
3. what it writes (``Step.writes``) that a later command or the host reads is
   downloaded into the image, with the profile records.

Spans that overlap or touch are placed as one contiguous segment, so every
address a command derives from a field stays inside its segment. Three
rewrites keep a command's memory small:

* an output written in part of each pixel (a concat member) goes to a
  *compact* region on the board (``dst_pix`` = the words written) and is
  scattered into the image by the host;
* an input read in part of each pixel (``src_pix`` > ``cb``) is gathered by
  the host into a compact region (``src_pix`` = 0);
* a convolution or Fire module too big for the board is cut into *slices* of
  its output-channel tiles (weight blobs are tile by tile,
  :func:`hw.layout.pack_conv_blob`); each slice reads the whole input band
  again (a Fire slice squeezes it again).

:func:`plan_staging` makes the plan without a board; :func:`traffic` turns it
into bytes and frames on the link (:mod:`hw.link.protocol`), and
:func:`link_fps` into frames per second for a line rate.

The package by what it holds: :mod:`.commands` (address fields and their
relocation), :mod:`.units` (a step as the board runs it), :mod:`.plan` (the
groups, and compiling for a board), :mod:`.traffic` (the link's cost),
:mod:`.transport` (:class:`StagedTransport`), :mod:`.board` (opening a board).
"""

from .board import board_transport, connect_board, open_board
from .commands import StagingError, relocate_command
from .plan import Group, StagingPlan, compile_for_board, plan_staging, program_config
from .traffic import Traffic, link_fps, traffic
from .transport import StagedTransport
from .units import Gather, Scatter, Unit

__all__ = ["StagingError", "Scatter", "Gather", "Unit", "Group", "StagingPlan", "plan_staging", "relocate_command",
           "StagedTransport", "Traffic", "traffic", "link_fps", "open_board", "program_config", "compile_for_board",
           "connect_board", "board_transport"]

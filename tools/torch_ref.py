"""``python -m tools.torch_ref``: the agreement of the golden model with PyTorch's QNNPACK kernels.

One row per Fire module convolution of SqueezeNet 1.1 over a few pictures (needs the shared data); the
comparison itself is :mod:`quant.torch_ref`.
"""

from __future__ import annotations

import argparse

import torch

from quant import golden
from quant.torch_ref import compare_fire_convs, format_table


def main(argv: list[str] | None = None) -> None:
    """``python -m tools.torch_ref``: golden vs QNNPACK on SqueezeNet 1.1's Fire convolutions."""
    from sw.models.squeezenet import CALIBRATION_KINDS, load_squeezenet11, quantize_squeezenet11
    from sw.shared import imagenet_preprocess, require_shared


    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--images", nargs="+", default=["images/coco_cat.jpg", "images/coco_dog.jpg"],
                   help="images (paths relative to the shared directory), ImageNet preprocessing")
    p.add_argument("--calibration", choices=CALIBRATION_KINDS, default="imagenet")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    q = quantize_squeezenet11(args.calibration, load_squeezenet11())
    runs = [golden.run(q, golden.quantize_input(imagenet_preprocess(require_shared(img)), q.qparams(q.inputs[0])))
            for img in args.images]
    print(f"SqueezeNet 1.1, calibration {args.calibration!r}, images {', '.join(args.images)}; "
          f"torch {torch.__version__}, engine qnnpack")
    print(format_table(compare_fire_convs(q, runs)))


if __name__ == "__main__":
    main()

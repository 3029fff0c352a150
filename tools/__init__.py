"""Applications: the command-line tools and benchmarks that may import every package.

The package order is ``hw`` <- ``quant`` <- ``sw`` <- ``sim`` <- ``tools``
(``tests/test_package_order.py``): ``make sim`` is :mod:`tools.run_fire`,
``make bench`` :mod:`tools.bench` (with :mod:`tools.bench_golden`),
:mod:`tools.board_fps` the per-board frame rates, :mod:`tools.torch_ref`
the golden model against PyTorch's QNNPACK.
"""

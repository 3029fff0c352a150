# A package so that pytest puts the repository root on sys.path (the editable install exposes
# hw/quant/sw as namespace packages outside it) and so tests can share reference helpers.

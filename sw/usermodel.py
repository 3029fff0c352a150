"""The user's own model on the engine: a ``.tflite`` file, or a PyTorch factory ``package.module:function``.

* **TFLite** (int8): imported with every scale and zero point as stored (:mod:`quant.tflite`), the
  operators the engine computes exactly as TFLite does lowered onto it (:mod:`quant.tflite.lower`), the
  rest (RESHAPE, SOFTMAX, ...) run after it on the host with TFLite's own kernels. Every tensor equals
  TensorFlow Lite Micro's.
* **PyTorch**: the factory's float model is captured, quantized with calibration pictures
  (``calibrate``), compiled; float host operations at the end (flatten, softmax) as for the built-in
  networks.

:func:`load_model` reads a model, :func:`run_model` runs it on a backend and returns every tensor the
engine wrote (and, with ``check``, compares each layer with the golden model as it is produced).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import time
from pathlib import Path

import numpy as np
import torch

from hw.isa import EngineConfig

__all__ = ["PREPROCESSING", "UserModel", "load_model", "load_input", "run_model", "ModelRun", "is_model_spec"]

#: Picture preprocessing choices: what the network sees of an 8-bit picture resized to its input.
PREPROCESSING = {
    "minus128": "int8 = pixel - 128 (TFLite Micro's examples, e.g. person_detect)",
    "unit": "real = pixel / 255",
    "imagenet": "real = (pixel / 255 - mean) / std, ImageNet's mean and std",
    "raw": "real = pixel (0..255)",
}
_MEAN = np.array([0.485, 0.456, 0.406])
_STD = np.array([0.229, 0.224, 0.225])
_PICTURE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def is_model_spec(text: str) -> bool:
    """A ``.tflite`` path or a ``package.module:function`` factory (not a built-in network's name)."""
    return text.endswith(".tflite") or (":" in text and not os.path.exists(text))


@dataclasses.dataclass(eq=False)
class UserModel:
    """A model ready to compile: its integer graph, and for TFLite the lowering (host tail)."""

    name: str
    kind: str                    # "tflite" or "torch"
    qgraph: object               # quant.quantize.QGraph (the engine part)
    input_shape: tuple           # (C, H, W) the engine takes
    preprocess: str
    lowered: object = None       # quant.tflite.lower.Lowered for TFLite

    def describe(self) -> str:
        if self.lowered is not None:
            return self.lowered.describe()
        return self.qgraph.summary()


def _factory(spec: str):
    import sys

    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise ValueError(f"{spec}: a PyTorch model is given as package.module:function")
    if os.getcwd() not in sys.path and "" not in sys.path:   # as `python -m` does: the current folder first
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"{spec}: cannot import {module_name!r} ({e})") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ValueError(f"{spec}: {module_name} has no function {func_name!r}")
    model = func()
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"{spec}: returned a {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def _pictures_in(folder: str) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"--calibrate {folder}: not a folder of pictures")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in _PICTURE_SUFFIXES | {".npy"})
    if not files:
        raise ValueError(f"--calibrate {folder}: no pictures (or .npy inputs) in the folder")
    return files


def load_input(path: str | os.PathLike, shape: tuple[int, int, int], preprocess: str) -> np.ndarray:
    """A picture (resized to the input's ``(C, H, W)``, grey or RGB as ``C`` says) or a ``.npy`` array as the
    network's input: float32 ``(C, H, W)`` real values, or int8 for ``minus128``. A ``.npy`` is taken as
    it is (int8 for a TFLite model, real values for PyTorch) and must hold ``C*H*W`` values."""
    from PIL import Image

    from sw.preprocess import check_input_file, picture_8bit

    c, h, w = shape
    name = os.fspath(path)
    if name.endswith(".npy"):
        check_input_file(name, "a .npy input")
        a = np.load(name, allow_pickle=False)
        if a.size != c * h * w:
            raise ValueError(f"{name}: {a.size} values, the model takes {c}x{h}x{w}")
        if a.ndim == 4 and a.shape[-1] == c and a.shape[1] != c:   # NHWC (TFLite's)
            a = a.reshape(h, w, c).transpose(2, 0, 1)
        return a.reshape(c, h, w)
    if c not in (1, 3):
        raise ValueError(f"{name}: the model takes {c} input channels; a picture gives 1 (grey) or 3 (RGB)")
    im = picture_8bit(name)
    im = im.convert("L" if c == 1 else "RGB")
    if im.size != (w, h):
        im = im.resize((w, h), Image.BILINEAR)
    px = np.asarray(im, dtype=np.float64).reshape(h, w, c).transpose(2, 0, 1)
    if preprocess == "minus128":
        return (px - 128).astype(np.int8)
    if preprocess == "unit":
        return (px / 255).astype(np.float32)
    if preprocess == "imagenet":
        if c != 3:
            raise ValueError(f"--preprocess imagenet needs an RGB input; the model takes {c} channel(s)")
        return ((px / 255 - _MEAN[:, None, None]) / _STD[:, None, None]).astype(np.float32)
    if preprocess == "raw":
        return px.astype(np.float32)
    raise ValueError(f"--preprocess {preprocess}: choose from {', '.join(PREPROCESSING)}")


def _int8_input(x: np.ndarray, qparams, preprocess: str) -> np.ndarray:
    """The engine's int8 input: as given for ``minus128`` / int8 arrays, else quantized with ``qparams``."""
    from quant import golden

    if x.dtype == np.int8 or preprocess == "minus128" and x.dtype.kind in "iu":
        if x.min() < -128 or x.max() > 127:
            raise ValueError("an integer input outside int8")
        return x.astype(np.int8)
    return golden.quantize_input(x.astype(np.float32), qparams)


def load_model(spec: str, *, calibrate: str | None = None, preprocess: str | None = None,
               input_shape: tuple[int, int, int] = (3, 224, 224), calibration_inputs: list | None = None,
               noise_calibration: bool = False) -> UserModel:
    """Read a ``.tflite`` file or call a PyTorch factory; quantize a PyTorch model.

    ``calibrate`` is a folder of pictures (or ``.npy`` inputs) for a PyTorch model; without it the
    ``calibration_inputs`` (the pictures it will run on) calibrate, or with ``noise_calibration`` seeded
    noise (enough for a schedule: it does not depend on the scales). The model is captured first, so
    that a refusal comes before any calibration. ``preprocess`` defaults to
    ``minus128`` for TFLite and ``imagenet`` for PyTorch. Refusals (an operator or a layer the
    pipeline cannot run) raise :class:`~quant.graph.UnsupportedModelError` naming it.
    """
    if spec.endswith(".tflite"):
        from quant.tflite import import_tflite
        from quant.tflite.lower import lower
        from sw.preprocess import check_input_file

        check_input_file(spec, "a .tflite model")
        low = lower(import_tflite(spec))
        shape = tuple(low.qgraph[low.qgraph.inputs[0]].shape)
        return UserModel(Path(spec).name, "tflite", low.qgraph, shape, preprocess or "minus128", low)
    from quant.graph import capture
    from quant.quantize import quantize_model

    preprocess = preprocess or "imagenet"
    model = _factory(spec)
    capture(model, tuple(input_shape))    # refusals first
    files = _pictures_in(calibrate) if calibrate else list(calibration_inputs or [])
    if files:
        xs = [load_input(f, input_shape, preprocess) for f in files]
        if any(x.dtype == np.int8 for x in xs):
            raise ValueError("--preprocess minus128 gives int8 inputs: a PyTorch model takes real values")
        calib = torch.from_numpy(np.stack(xs).astype(np.float32))
    elif noise_calibration:
        calib = torch.randn((4, *input_shape), generator=torch.Generator().manual_seed(0))
    else:
        raise ValueError(f"{spec}: no calibration pictures (give --calibrate DIR)")
    qg = quantize_model(model, calib, input_shape)
    return UserModel(spec, "torch", qg, tuple(input_shape), preprocess)


@dataclasses.dataclass
class ModelRun:
    """One input through the model: the outputs, every tensor by name, the engine's per-layer report."""

    outputs: dict[str, np.ndarray]       # output name -> values (int8 for TFLite, float for PyTorch)
    tensors: dict[str, np.ndarray]       # every tensor the engine wrote (C, H, W) int8, and the host's
    report: object                       # sw.report.NetworkReport
    exact: dict[str, bool] | None        # engine layer -> equal to the golden model
    real: dict[str, np.ndarray]          # output name -> dequantized values (TFLite) / the values (PyTorch)


def compile_model(model: UserModel, config: EngineConfig):
    """The engine program (every tensor in its own region, so that all can be read back)."""
    from sw.compiler import compile_graph

    return compile_graph(model.qgraph, config, reuse_memory=False)


def run_model(model: UserModel, inputs: list, *, backend: str = "golden", config: EngineConfig | None = None,
              check: bool = True, port: str | None = None, progress: bool = False, clock_mhz: float = 100.0
              ) -> list[ModelRun]:
    """Run ``inputs`` (each as :func:`load_input` gives it) through the model on ``backend``."""
    from quant import golden
    from sw.driver import Driver
    from sw.networks import engine_backend
    from sw.report import network_report
    from sw.runtime import Session, host_finish, run_network

    config = config or EngineConfig()
    prog = compile_model(model, config)
    g = model.qgraph
    runs = []
    with engine_backend(backend, config, prog.mem_words, port=port) as transport:
        session = Session(prog, Driver(transport, config, timed=backend != "golden"))
        for x in inputs:
            x_q = _int8_input(np.asarray(x), g.qparams(g.inputs[0]), model.preprocess)
            reference = golden.run(g, x_q) if check else None
            t0 = time.monotonic()
            run = run_network(session, x_q, reference=reference, progress=progress, desc=model.name)
            wall = time.monotonic() - t0
            names = [n for n in prog.views if n not in prog.inputs]
            tensors = {n: prog.unpack_tensor(n, session.driver.read_words) for n in names}
            tensors[g.inputs[0]] = x_q
            rep = network_report(prog, run.profile, network=model.name, backend=backend, wall_s=wall,
                                 cycles=run.cycles, clock_mhz=clock_mhz, exact=run.exact)
            if model.kind == "tflite":
                outputs, real, tensors = _tflite_finish(model, tensors)
            else:
                values = host_finish(g, {**run.tensors, **tensors})
                outputs = {name: np.asarray(v).reshape(-1) for name, v in zip(g.outputs, values, strict=True)}
                real = outputs
            runs.append(ModelRun(outputs=outputs, tensors=tensors, report=rep, exact=run.exact, real=real))
    return runs


def _tflite_finish(model: UserModel, engine_tensors: dict[str, np.ndarray]):
    """The host operators after the engine part, with TFLite's kernels; every tensor in TFLite's layout."""
    from quant.tflite.lower import to_nhwc

    graph = model.lowered.graph
    env = {n: to_nhwc(v, graph.tensors[n].shape) for n, v in engine_tensors.items()}
    for op in model.lowered.host:
        env[op.output] = op.run(*[env[n] if n in env else graph.tensors[n].data for n in op.inputs])
    outputs = {n: env[n] for n in graph.outputs}
    real = {}
    for n, v in outputs.items():
        t = graph.tensors[n]
        real[n] = (float(t.per_tensor_scale) * (v.astype(np.float64) - t.per_tensor_zero_point)
                   if t.quantized else v.astype(np.float64))
    return outputs, real, env

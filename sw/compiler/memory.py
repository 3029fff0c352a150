"""Memory: placing tensors in roots (concat members, residual-add halves) and allocating their regions."""

from __future__ import annotations

import numpy as np

from hw.layout import cdiv
from quant.graph import HostOp
from quant.quantize import QConcat, QDualConv, QFlatten

from .planning import _Op
from .program import CompileError, Root, TensorView


def _merge_free(free):
    free = sorted(f for f in free if f[1] > 0)
    out = []
    for a, n in free:
        if out and out[-1][0] + out[-1][1] == a:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((a, n))
    return out

def _tensor_refs(node: HostOp):
    from quant.graph import TensorRef
    found = []

    def walk(a):
        if isinstance(a, TensorRef):
            found.append(a.name)
        elif isinstance(a, (list, tuple)):
            for v in a:
                walk(v)
        elif isinstance(a, dict):
            for v in a.values():
                walk(v)
    walk(node.args)
    walk(node.kwargs)
    return found


class _Memory:
    """Placement and allocation (a part of :class:`~sw.compiler.compile._Compiler`)."""

    def place(self, ops: list[_Op]):
        g, R = self.g, self.R
        # Containers: concats (non-fire concats, and fire concats for their two halves) and residual inputs.
        for node in g.nodes:
            if isinstance(node, QConcat):
                off = 0
                for i in node.inputs:
                    self._attach(i, node.name, off, node.name)
                    off += cdiv(g.tensors[i].shape[0], R) * R
            if isinstance(node, QDualConv):
                a, b = node.inputs
                name = f"{node.name}:in"
                ca = cdiv(g.tensors[a].shape[0], R) * R
                self._attach(a, name, 0, node.name)
                self._attach(b, name, ca, node.name)
                self._virtual[name] = (ca + cdiv(g.tensors[b].shape[0], R) * R,) + tuple(g.tensors[a].shape[1:])
        stored = {g.inputs[0]} if g.inputs else set()
        for op in ops:
            stored.add(op.out)
            stored.add(op.src)
        for out in self._engine_outputs():
            stored.add(out)
        for name in stored:
            self._view(name)

    def _attach(self, child: str, container: str, lane_offset: int, layer: str):
        if child in self.parent and self.parent[child][0] != container:
            raise CompileError(layer, f"tensor {child!r} would have to sit in two places "
                                      f"({self.parent[child][0]!r} and {container!r})")
        self.parent[child] = (container, lane_offset)

    def _shape(self, name):
        if name in self._virtual:
            return self._virtual[name]
        return tuple(self.g.tensors[name].shape)

    def _view(self, name: str) -> TensorView:
        if name in self.views:
            return self.views[name]
        R = self.R
        if name in self.fused_pools:
            raise AssertionError(f"fused pool output {name} has no storage")
        c, h, w = self._shape(name)
        if name in self.packed_inputs:
            root = Root(name, h, cdiv(w, 2))
            self.roots[name] = root
            view = TensorView(name, R, h, cdiv(w, 2), root, 0, np.arange(R))
            self.views[name] = view
            return view
        if name in self.parent:
            cont, lane_off = self.parent[name]
            pv = self._view(cont)
            base_lane = lane_off + pv.offset * R
            view = TensorView(name, c, h, w, pv.root, base_lane // R, np.arange(c) + base_lane % R)
            if (pv.h, pv.w) != (h, w):
                raise CompileError(name, f"placed in {cont!r} of another size")
        else:
            root = Root(name, h, w)
            self.roots[name] = root
            view = TensorView(name, c, h, w, root, 0, np.arange(c))
        self.views[name] = view
        return view

    def _engine_outputs(self) -> list[str]:
        """Integer tensors the host reads: graph outputs and the inputs of host ops."""
        g = self.g
        outs = []
        for n in g.nodes:
            if isinstance(n, HostOp):
                for a in _tensor_refs(n):
                    if a in g.tensors and not isinstance(g.get(a), HostOp) and a not in outs:
                        outs.append(a)
        for o in g.outputs:
            if o in g.tensors and o not in outs:
                outs.append(self._unflatten(o))
        return [self._unflatten(o) for o in outs]

    def _unflatten(self, name):
        node = self.g.get(name)
        while isinstance(node, QFlatten):
            name = node.inputs[0]
            node = self.g[name]
        return name

    # -- allocation -----------------------------------------------------------------------------
    def allocate(self, ops: list[_Op], blob_words: int) -> int:
        R = self.R
        for root in self.roots.values():
            root.pix = 0
        for v in self.views.values():
            v.root.pix = max(v.root.pix, v.offset + v.cb(R))
        # Lifetimes in op indices.
        first = {}
        last = {}
        for i, op in enumerate(ops):
            for t in (op.out,):
                r = self.views[t].root.name
                first.setdefault(r, i)
                last[r] = max(last.get(r, i), i)
            r = self.views[op.src].root.name
            last[r] = max(last.get(r, i), i)
            first.setdefault(r, i)
        pinned = {self.views[t].root.name for t in self._engine_outputs()} | \
                 {self.views[t].root.name for t in self.g.inputs if t in self.views}
        base = blob_words
        free: list[tuple[int, int]] = []  # (addr, words), sorted by addr
        live: list[tuple[int, Root]] = []
        order = sorted(self.roots.values(), key=lambda r: (first.get(r.name, -1), r.name))
        top = base
        for root in order:
            root.pinned = root.name in pinned or not self.reuse
            root.first = first.get(root.name, -1)
            root.last = len(ops) if root.pinned else last.get(root.name, root.first)
            # free the regions whose last reader ran before this one's first writer
            still = []
            for end, r in live:
                if end < root.first and not r.pinned:
                    free.append((r.addr, r.words))
                else:
                    still.append((end, r))
            live = still
            free = _merge_free(free)
            need = root.words
            for k, (a, n) in enumerate(free):
                if n >= need:
                    root.addr = a
                    free[k] = (a + need, n - need)
                    break
            else:
                root.addr = top
                top += need
            live.append((root.last, root))
        return top

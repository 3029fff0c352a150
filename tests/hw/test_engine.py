"""The engine's generated Verilog in Verilator, against the golden machine, command by command.

Each run writes the same memory image and command list to the simulated engine
and to :class:`sw.isa_exec.IsaMachine` (the golden model's execution of the
command set) and compares the output regions word for word. Independent loop
references check the golden side on the same shapes (tests/reference.py).
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hw.isa import PROFILE_FIELDS, EngineConfig, ErrorCode, Opcode, Reg, Status, check_command, pack_command
from hw.layout import cdiv, pack_activation, pack_conv_blob, unpack_activation
from quant.arith import fold_zero_point, quantize_multiplier, requantize

from ..reference import conv_acc_reference, maxpool_reference, pool_out_size
from .bench import EngineBench, expect_error

pytestmark = pytest.mark.verilator

CONFIGS = {
    # The default configuration (the one `make sim` and the ECP5 boards build).
    "8x16": EngineConfig(),
    # The smallest array, small buffers: partial tiles, many passes and bands everywhere.
    "2x4": EngineConfig(rows=2, cols=4, ibuf_depth=1024, acc_depth=16, pool_max_cb=16, mem_addr_bits=20),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def bench(request):
    b = EngineBench(CONFIGS[request.param])
    yield b
    b.close()


SRC, WBLOB, DST, CMDS = 0x1000, 0x8000, 0x20000, 0x100


def _qconv(rng, cin, cout, kh, kw=None):
    kw = kh if kw is None else kw
    w = rng.integers(-127, 128, (cout, cin, kh, kw))
    bias = rng.integers(-20000, 20000, cout)
    mq = [quantize_multiplier(s) for s in rng.uniform(0.0002, 0.004, cout)]
    return w, bias, np.array([a for a, _ in mq]), np.array([b for _, b in mq])


def conv_case(cfg, rng, *, cin, cout, h, w, k, stride, pad, dil=1, pool=None, zp_in=None, src=SRC, wblob=WBLOB,
              dst=DST, ibuf=0):
    """A CONV command over a whole tensor with its memory image and independent expected output.

    ``k`` is a side or ``(kh, kw)``, ``stride`` one or ``(sy, sx)``, ``pad`` one or ``(top, left, bottom,
    right)`` (bottom and right padding are only the output size: the engine reads ``zp_in`` past the band).
    """
    R = cfg.rows
    kh, kw = (k, k) if isinstance(k, int) else k
    sy, sx = (stride, stride) if isinstance(stride, int) else stride
    pt, pl, pb, pr = (pad,) * 4 if isinstance(pad, int) else pad
    x = rng.integers(-128, 128, (cin, h, w))
    zp_in = int(rng.integers(-128, 128)) if zp_in is None else zp_in
    zp_out = int(rng.integers(-30, 30))
    if pool:
        pk, ceil_mode, ppad = (*pool, 0)[:3]
        in_h, in_w = pool_out_size(h, pk, 2, ppad, ceil_mode), pool_out_size(w, pk, 2, ppad, ceil_mode)
        xin = maxpool_reference(x, k=pk, stride=2, pad=(ppad, ppad), out_hw=(in_h, in_w))
    else:
        in_h, in_w, xin = h, w, x
    out_h = (in_h + pt + pb - dil * (kh - 1) - 1) // sy + 1
    out_w = (in_w + pl + pr - dil * (kw - 1) - 1) // sx + 1
    wt, bias, m0, sh = _qconv(rng, cin, cout, kh, kw)
    blob = pack_conv_blob(wt, fold_zero_point(bias, wt, zp_in), m0, sh, cfg)
    cmd = pack_command(
        Opcode.CONV,
        load=dict(src=src, src_rows=h, src_w=w, cb=cdiv(cin, R), ibuf=ibuf,
                  **(dict(pool=1, pool_k=pk, pool_pad_t=ppad, pool_pad_l=ppad) if pool else {})),
        in_h=in_h, in_w=in_w, kh=kh, kw=kw, sy=sy, sx=sx, dil=dil, pad_t=pt, pad_l=pl,
        out_h=out_h, out_w=out_w, cout=cout,
        quant=dict(zp_in=zp_in, zp_out=zp_out, act_min=zp_out, act_max=127),
        wblob=wblob, dst=dst, dst_pix=cdiv(cout, R))
    acc = conv_acc_reference(xin, wt, fold_zero_point(bias, wt, zp_in), zp_in=zp_in, stride=(sy, sx),
                             pad=(pt, pl), dil=dil, out_hw=(out_h, out_w))
    expect = requantize(acc, m0[:, None, None], sh[:, None, None], zp_out, zp_out, 127)
    writes = [(src, pack_activation(x, R)), (wblob, blob)]
    return writes, cmd, (out_h, out_w, cout), expect


def _check_against_reference(bench, out_shape, expect, machine):
    """The golden machine against the loop reference (the simulator was compared with the machine already)."""
    out_h, out_w, cout = out_shape
    R = bench.config.rows
    n = out_h * out_w * cdiv(cout, R)
    got = unpack_activation(machine.mem[DST:DST + n], cout, out_h, out_w, R)
    bad = np.argwhere(got != expect)
    assert not len(bad), (f"golden machine disagrees with the loop reference on {len(bad)} of {got.size} outputs; "
                          "first (channel, y, x): golden machine, loop reference: "
                          + ", ".join(f"{tuple(int(v) for v in b)}: {got[tuple(b)]}, {expect[tuple(b)]}"
                                      for b in bad[:8]))


CONV_CASES = [
    # cin, cout, h, w, k, stride, pad, dil, pool (kernel, ceil mode[, padding])
    (3, 20, 9, 11, 3, 1, 1, 1, None),
    (16, 16, 8, 8, 1, 1, 0, 1, None),
    (19, 33, 7, 9, 3, 2, 1, 1, None),
    (8, 8, 6, 7, 3, 1, 0, 1, None),
    (16, 12, 11, 11, 3, 1, 3, 3, None),
    (12, 17, 12, 13, 1, 1, 0, 1, (3, True)),
    (6, 10, 10, 9, 3, 1, 1, 1, (2, False)),
    (40, 70, 5, 6, 3, 1, 1, 1, None),
    (4, 6, 1, 1, 3, 1, 1, 1, None),
    (16, 16, 11, 10, 3, 1, 5, 5, None),   # RFSong's RFB branch: dilation 5, padding 5
    (8, 8, 9, 9, 3, 1, 7, 1, None),       # the largest padding, wider than the kernel
    # kernels up to 7x7, 1xK and Kx1, strides up to 4, asymmetric padding (t, l, b, r)
    (3, 96, 23, 21, (7, 7), (2, 2), (3, 3, 3, 3), 1, None),   # SqueezeNet 1.0's conv1 shape
    (3, 16, 17, 19, (7, 7), (2, 2), (2, 3, 3, 2), 1, None),   # TF-SAME style: more padding after
    (16, 24, 8, 9, (1, 3), (1, 1), (0, 1, 0, 1), 1, None),    # SqueezeNext 1x3
    (16, 24, 8, 9, (3, 1), (1, 1), (1, 0, 1, 0), 1, None),    # SqueezeNext 3x1
    (12, 20, 12, 11, (5, 5), (3, 3), (2, 2, 2, 2), 1, None),
    (10, 18, 12, 13, (4, 4), (4, 4), (0, 0, 0, 0), 1, None),  # a patchify stem
    (8, 8, 14, 15, (5, 3), (1, 4), (2, 1, 2, 1), 2, None),    # dilated, mixed strides
    (9, 17, 15, 13, (6, 7), (3, 2), (5, 0, 1, 6), 1, (2, False)),
    # Padded pooling of rows of one word (one pixel, one channel block): pooled rows merge back to back.
    (1, 5, 6, 1, 3, 1, 1, 1, (3, False, 1)),
    (1, 6, 7, 1, 3, 1, 1, 1, (2, False, 1)),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "c{}-{}_{}x{}_k{}s{}p{}d{}{}".format(
    *[("x".join(map(str, v)) if isinstance(v, tuple) else v) for v in c[:8]],
    f"_pool{c[8][0]}" + (f"p{c[8][2]}" if len(c[8]) > 2 else "") if c[8] else ""))
def test_conv(bench, case):
    cin, cout, h, w, k, s, pad, dil, pool = case
    rng = np.random.default_rng(sum(np.sum(v) for v in case[:8]))
    writes, cmd, shape, expect = conv_case(bench.config, rng, cin=cin, cout=cout, h=h, w=w, k=k, stride=s,
                                           pad=pad, dil=dil, pool=pool)
    n = shape[0] * shape[1] * cdiv(shape[2], bench.config.rows)
    sim, machine = bench.run(writes, [cmd], [(DST, n)], cmd_addr=CMDS)
    assert sim.status & Status.DONE, f"case does not run on this configuration: status {sim.status:#x}"
    _check_against_reference(bench, shape, expect, machine)


@pytest.mark.parametrize("stalls", [0.3, 0.8])
def test_conv_under_memory_stalls(bench, stalls):
    """The memory answers late and irregularly (random stalls in the gateware memory model): same result."""
    rng = np.random.default_rng(7)
    writes, cmd, shape, expect = conv_case(bench.config, rng, cin=10, cout=20, h=9, w=10, k=3, stride=1, pad=1,
                                           pool=(3, False))
    n = shape[0] * shape[1] * cdiv(shape[2], bench.config.rows)
    stalled = [bench.vl.mem_info()["stalled"]]
    sim, machine = bench.run(writes, [cmd], [(DST, n)], cmd_addr=CMDS, stalls=stalls)
    _check_against_reference(bench, shape, expect, machine)
    stalled.append(bench.vl.mem_info()["stalled"])
    free, machine = bench.run(writes, [cmd], [(DST, n)], cmd_addr=CMDS, stalls=0.0)
    _check_against_reference(bench, shape, expect, machine)
    stalled.append(bench.vl.mem_info()["stalled"])
    # The stalls must have happened: counted by the memory, and the stalled run takes longer than the stall-free one.
    held, free_held = stalled[1] - stalled[0], stalled[2] - stalled[1]
    assert held > 0 and free_held == 0, f"stalls {stalls}: {held} stalled memory cycles, {free_held} without stalls"
    assert sim.cycles > free.cycles > 0, f"stalls {stalls}: {sim.cycles} cycles vs {free.cycles} without stalls"
    print(f"{bench.config.rows}x{bench.config.cols} stalls {stalls:.0%}: {sim.cycles} cycles ({held} memory cycles "
          f"stalled) vs {free.cycles} stall-free")


def fire_case(cfg, rng, *, cin, sq, e1, e3, h, w, bands):
    """FIRE commands covering ``h`` rows in ``bands`` bands (halo rows squeezed again at each edge)."""
    R = cfg.rows
    x = rng.integers(-128, 128, (cin, h, w))
    zp_in, zp_sq, zp_out = -128, int(rng.integers(-128, -100)), int(rng.integers(-128, -100))
    convs = [_qconv(rng, cin, sq, 1), _qconv(rng, sq, e1, 1), _qconv(rng, sq, e3, 3)]
    zps = [zp_in, zp_sq, zp_sq]
    blobs, addr, addrs = [], WBLOB, []
    for (wt, b, m0, sh), zp in zip(convs, zps, strict=True):
        blob = pack_conv_blob(wt, fold_zero_point(b, wt, zp), m0, sh, cfg)
        blobs.append((addr, blob))
        addrs.append(addr)
        addr += len(blob)
    cb = cdiv(cin, R)
    pix = cdiv(e1, R) + cdiv(e3, R)
    cmds = []
    edges = np.linspace(0, h, bands + 1).astype(int)
    for oy0, oy1 in zip(edges[:-1], edges[1:], strict=True):
        s_lo, s_hi = max(oy0 - 1, 0), min(oy1 + 1, h)
        in_h = s_hi - s_lo
        cmds.append(pack_command(
            Opcode.FIRE, load=dict(src=SRC + s_lo * w * cb, src_rows=in_h, src_w=w, cb=cb, ibuf=0),
            in_h=in_h, in_w=w, halo_top=int(oy0 > 0), out_h=oy1 - oy0, squeeze=sq, expand1=e1, expand3=e3,
            sq_ibuf=in_h * w * cb, zp_in=zp_in, zp_sq=zp_sq, zp_out=zp_out, sq_min=zp_sq, sq_max=127,
            out_min=zp_out, out_max=127, w_sq=addrs[0], w_e1=addrs[1], w_e3=addrs[2], dst=DST + oy0 * w * pix))
    # Independent expectation: squeeze, then both expands on the whole image.
    (ws, bs, ms, ss), (w1, b1, m1, s1), (w3, b3, m3, s3) = convs
    acc = conv_acc_reference(x, ws, fold_zero_point(bs, ws, zp_in), zp_in=zp_in, out_hw=(h, w))
    sq_out = requantize(acc, ms[:, None, None], ss[:, None, None], zp_sq, zp_sq, 127)
    y1 = requantize(conv_acc_reference(sq_out, w1, fold_zero_point(b1, w1, zp_sq), zp_in=zp_sq, out_hw=(h, w)),
                    m1[:, None, None], s1[:, None, None], zp_out, zp_out, 127)
    y3 = requantize(conv_acc_reference(sq_out, w3, fold_zero_point(b3, w3, zp_sq), zp_in=zp_sq, pad=(1, 1),
                                       out_hw=(h, w)), m3[:, None, None], s3[:, None, None], zp_out, zp_out, 127)
    writes = [(SRC, pack_activation(x, R)), *blobs]
    return writes, cmds, pix, np.concatenate([y1, y3])


@pytest.mark.parametrize("bands", [1, 3])
def test_fire(bench, bands):
    cfg = bench.config
    R = cfg.rows
    rng = np.random.default_rng(bands)
    cin, sq, e1, e3, h, w = 24, 8, 16, 16, 9, 7
    writes, cmds, pix, expect = fire_case(cfg, rng, cin=cin, sq=sq, e1=e1, e3=e3, h=h, w=w, bands=bands)
    _, machine = bench.run(writes, cmds, [(DST, h * w * pix)], cmd_addr=CMDS)
    got1 = unpack_activation(machine.mem[DST:DST + h * w * pix], e1, h, w, R, pix_words=pix)
    got3 = unpack_activation(machine.mem[DST:DST + h * w * pix], e3, h, w, R, pix_words=pix,
                             offset=cdiv(e1, R))
    assert np.array_equal(np.concatenate([got1, got3]), expect), "golden machine disagrees with the loop reference"


@pytest.mark.parametrize("k,ceil_mode,pad", [(3, False, 0), (3, True, 0), (2, True, 0), (3, False, 1)])
def test_pool_command(bench, k, ceil_mode, pad):
    """Standalone max pool, written with a wider pixel stride (as into a concat)."""
    cfg = bench.config
    R = cfg.rows
    rng = np.random.default_rng(k + 2 * pad)
    c, h, w = 11, 9, 8
    x = rng.integers(-128, 128, (c, h, w))
    oh, ow = pool_out_size(h, k, 2, pad, ceil_mode), pool_out_size(w, k, 2, pad, ceil_mode)
    cb = cdiv(c, R)
    cmd = pack_command(Opcode.POOL, load=dict(src=SRC, src_rows=h, src_w=w, cb=cb, pool=1, pool_k=k,
                                              pool_pad_t=pad, pool_pad_l=pad),
                       out_h=oh, out_w=ow, dst=DST + 1, dst_pix=cb + 2)
    _, machine = bench.run([(SRC, pack_activation(x, R))], [cmd], [(DST, oh * ow * (cb + 2) + 1)], cmd_addr=CMDS)
    got = unpack_activation(machine.mem[DST:DST + oh * ow * (cb + 2) + 1], c, oh, ow, R, pix_words=cb + 2, offset=1)
    expect = maxpool_reference(x, k=k, stride=2, pad=(pad, pad), out_hw=(oh, ow))
    assert np.array_equal(got, expect)


def test_gap_command(bench):
    cfg = bench.config
    R = cfg.rows
    rng = np.random.default_rng(3)
    c, h, w = 13, 5, 7
    x = rng.integers(-128, 128, (c, h, w))
    m0, sh = quantize_multiplier(1.0 / (h * w) * 0.9)
    zp_in, zp_out = -20, 4
    cb = cdiv(c, R)
    cmd = pack_command(Opcode.GAP, load=dict(src=SRC, src_rows=h, src_w=w, cb=cb), m0=m0, shift=sh, zp_in=zp_in,
                       zp_out=zp_out, dst=DST)
    _, machine = bench.run([(SRC, pack_activation(x, R))], [cmd], [(DST, cb)], cmd_addr=CMDS)
    got = unpack_activation(machine.mem[DST:DST + cb], c, 1, 1, R)[:, 0, 0]
    expect = requantize((x.astype(np.int64) - zp_in).sum(axis=(1, 2)), m0, sh, zp_out)
    assert np.array_equal(got, expect)


def _good_conv(cfg, **over):
    R = cfg.rows
    fields = dict(load=dict(src=SRC, src_rows=4, src_w=4, cb=1, ibuf=0), in_h=4, in_w=4, kh=3, kw=3, sy=1, sx=1,
                  dil=1, pad_t=1, pad_l=1, out_h=4, out_w=4, cout=R, wblob=WBLOB, dst=DST, dst_pix=1)
    for k, v in over.items():
        if k.startswith("load_"):
            fields["load"] = {**fields["load"], k[5:]: v}
        else:
            fields[k] = v
    return pack_command(Opcode.CONV, **fields)


def bad_commands(cfg):
    R = cfg.rows
    fire = dict(load=dict(src=SRC, src_rows=4, src_w=4, cb=1), in_h=4, in_w=4, out_h=4, squeeze=R, expand1=R,
                expand3=R, sq_ibuf=16, w_sq=WBLOB, w_e1=WBLOB, w_e3=WBLOB, dst=DST)
    return {
        "unknown opcode": (bytes([0xF]) + bytes(63), ErrorCode.BAD_OPCODE),
        "zeroed memory": (bytes(64), ErrorCode.BAD_OPCODE),
        "zero rows": (_good_conv(cfg, load_src_rows=0), ErrorCode.ZERO_SIZE),
        "zero channels": (_good_conv(cfg, cout=0), ErrorCode.ZERO_SIZE),
        "zero input blocks": (_good_conv(cfg, load_cb=0), ErrorCode.ZERO_SIZE),
        "band beyond the buffer": (_good_conv(cfg, load_src_rows=4095, load_src_w=4095, in_h=4095, in_w=4095),
                                   ErrorCode.IBUF_OVERFLOW),
        "buffer offset past the end": (_good_conv(cfg, load_ibuf=cfg.ibuf_depth - 3), ErrorCode.IBUF_OVERFLOW),
        "kernel 0": (_good_conv(cfg, kh=0), ErrorCode.BAD_KERNEL),
        "dilation 0": (_good_conv(cfg, dil=0), ErrorCode.BAD_KERNEL),
        "stride 5": (_good_conv(cfg, sy=5), ErrorCode.BAD_STRIDE),
        "stride 7": (_good_conv(cfg, sx=7), ErrorCode.BAD_STRIDE),
        "stride 0": (_good_conv(cfg, sx=0), ErrorCode.BAD_STRIDE),
        "pool kernel 1": (_good_conv(cfg, load_pool=1, load_pool_k=1, in_h=2, in_w=2), ErrorCode.BAD_POOL),
        "pool padding 2": (_good_conv(cfg, load_pool=1, load_pool_k=3, load_pool_pad_t=2, in_h=2, in_w=2),
                           ErrorCode.BAD_POOL),
        "pool too many blocks": (_good_conv(cfg, load_pool=1, load_pool_k=3, load_cb=cfg.pool_max_cb + 1, in_h=1,
                                            in_w=1), ErrorCode.BAD_POOL),
        "address beyond the port": (_good_conv(cfg, wblob=1 << cfg.mem_addr_bits), ErrorCode.BAD_ADDRESS),
        "shape mismatch": (_good_conv(cfg, in_h=5), ErrorCode.BAD_SHAPE),
        "output stride too small": (_good_conv(cfg, cout=2 * R, dst_pix=1), ErrorCode.BAD_PIXEL_STRIDE),
        "source stride too small": (_good_conv(cfg, load_cb=2, load_src_pix=1), ErrorCode.BAD_PIXEL_STRIDE),
        "fire expand1 not whole words": (pack_command(Opcode.FIRE, **{**fire, "expand1": R + 1}),
                                         ErrorCode.BAD_CHANNELS),
        "fire squeeze overlapping the input": (pack_command(Opcode.FIRE, **{**fire, "sq_ibuf": 8}),
                                               ErrorCode.IBUF_OVERFLOW),
        "fire band rows": (pack_command(Opcode.FIRE, **{**fire, "halo_top": 1}), ErrorCode.BAD_SHAPE),
        "pool without pooling": (pack_command(Opcode.POOL, load=dict(src=SRC, src_rows=4, src_w=4, cb=1), out_h=2,
                                              out_w=2, dst=DST, dst_pix=1), ErrorCode.BAD_POOL),
    }


@pytest.mark.parametrize("what", list(bad_commands(EngineConfig())))
def test_bad_command_reports_error_and_engine_stays_ready(bench, what):
    cmd, code = bad_commands(bench.config)[what]
    expect_error(bench, cmd, code)
    # ... and the next start runs a good command normally.
    rng = np.random.default_rng(1)
    writes, good, shape, expect = conv_case(bench.config, rng, cin=3, cout=5, h=4, w=5, k=3, stride=1, pad=1)
    n = shape[0] * shape[1] * cdiv(shape[2], bench.config.rows)
    sim, machine = bench.run(writes, [good], [(DST, n)], cmd_addr=CMDS)
    assert sim.status & Status.DONE
    _check_against_reference(bench, shape, expect, machine)


def test_error_in_the_middle_of_a_list(bench):
    """Commands before the bad one complete; the engine stops at it and names its index."""
    rng = np.random.default_rng(2)
    writes, good, shape, _ = conv_case(bench.config, rng, cin=3, cout=5, h=4, w=5, k=3, stride=1, pad=1)
    bad = _good_conv(bench.config, sy=5)
    n = shape[0] * shape[1] * cdiv(shape[2], bench.config.rows)
    sim, _ = bench.run(writes, [good, bad, good], [(DST, n)], cmd_addr=CMDS)
    assert Status.error_code(sim.status) == ErrorCode.BAD_STRIDE and sim.index == 1
    assert bench.vl.read_reg(Reg.CMD_INDEX) == 1


def test_profile_records(bench):
    rng = np.random.default_rng(5)
    writes, cmd, shape, _ = conv_case(bench.config, rng, cin=9, cout=20, h=8, w=8, k=3, stride=1, pad=1,
                                      pool=(2, False))
    n = shape[0] * shape[1] * cdiv(shape[2], bench.config.rows)
    sim, _ = bench.run(writes, [cmd, cmd], [(DST, n)], cmd_addr=CMDS, profile_addr=0x40)
    assert len(sim.profile) == 2
    for rec in sim.profile:
        assert set(rec) == set(PROFILE_FIELDS)
        assert 0 < rec["load"] < rec["cycles"] and 0 < rec["op0"] < rec["cycles"]
        assert rec["load"] + rec["op0"] <= rec["cycles"]
        assert 0 < rec["active"] <= rec["op0"]
    assert sum(r["cycles"] for r in sim.profile) <= sim.cycles


SRC2, WBLOB2, DST2 = 0x3000, 0xC000, 0x28000


def _two_convs(bench, *, ibuf2, after_first: bool):
    """Two CONV commands, the second's band at ``ibuf2``; with ``after_first`` the second convolves the
    first's output (its load reads what the first writes), else a tensor of its own. Runs them profiled,
    compared with the golden machine (which runs one command after the other), and returns the two
    profile records."""
    cfg = bench.config
    R = cfg.rows
    rng = np.random.default_rng(13)
    w1, c1, (h1, wd1, co1), e1 = conv_case(cfg, rng, cin=2 * R, cout=cfg.cols + 3, h=8, w=8, k=3, stride=1,
                                           pad=1)
    src2 = DST if after_first else SRC2
    w2, c2, (h2, wd2, co2), e2 = conv_case(cfg, rng, cin=co1, cout=5, h=h1, w=wd1, k=3, stride=1, pad=1,
                                           src=src2, wblob=WBLOB2, dst=DST2, ibuf=ibuf2)
    if after_first:
        w2 = w2[1:]  # its input is the first command's output
    n1, n2 = h1 * wd1 * cdiv(co1, R), h2 * wd2 * cdiv(co2, R)
    sim, machine = bench.run(w1 + w2, [c1, c2], [(DST, n1), (DST2, n2)], cmd_addr=CMDS, profile_addr=0x40)
    _check_against_reference(bench, (h1, wd1, co1), e1, machine)
    if not after_first:
        got = unpack_activation(machine.mem[DST2:DST2 + n2], co2, h2, wd2, R)
        assert np.array_equal(got, e2), "golden machine disagrees with the loop reference (second command)"
    first, second = sim.profile
    assert sum(r["cycles"] for r in sim.profile) <= sim.cycles
    return first, second


def test_next_load_overlaps_the_convolution(bench):
    """The second command's band sits in the other half of the buffer and reads its own tensor: its load
    runs during the first command's convolution, so from the first's end it takes fewer cycles than its
    load and convolution one after the other."""
    first, second = _two_convs(bench, ibuf2=bench.config.ibuf_depth // 2, after_first=False)
    assert second["load"] > 0 and second["op0"] > 0
    assert second["cycles"] < second["load"] + second["op0"], (first, second)
    # All but the handover (the slot change, the convolution's start and its last writes): under 32 cycles.
    assert second["cycles"] - second["op0"] < 32 < second["load"], f"the load was not hidden: {second}"


@pytest.mark.parametrize("hazard", ["buffer region", "memory fence"])
def test_hazard_makes_the_next_load_wait(bench, hazard):
    """The second command's band meets the first's in the buffer, or its load reads the first's output:
    the load waits for the first command to end (serial), and both outputs are exact."""
    region = hazard == "buffer region"
    first, second = _two_convs(bench, ibuf2=0 if region else bench.config.ibuf_depth // 2,
                               after_first=not region)
    assert second["load"] > 0 and second["op0"] > 0
    assert second["cycles"] >= second["load"] + second["op0"], (first, second)


#: Largest input rows/columns the property draws (before pooling).
PROPERTY_MAX_HW = 14
#: Pooling on load the property draws: None or (kernel, ceil_mode), stride 2, no padding.
PROPERTY_POOLS = [None, (2, False), (3, True), (3, False)]


def _sizes_after_pool(pool, n):
    return n if pool is None else pool_out_size(n, pool[0], 2, 0, pool[1])


@st.composite
def conv_shapes(draw, cfg: EngineConfig):
    """A CONV geometry valid on ``cfg`` by construction: at least one output pixel, the band fits the buffer.

    Every drawn value is labelled, so a failure prints the shrunk shape; nothing is filtered or skipped.
    """
    pool = draw(st.sampled_from(PROPERTY_POOLS), "pool")
    lo = 1 if pool is None else pool[0]  # a pooling window needs a whole input window (as in PyTorch)
    max_in = _sizes_after_pool(pool, PROPERTY_MAX_HW)
    pad = tuple(draw(st.integers(0, 7), f"pad_{side}") for side in ("t", "l", "b", "r"))
    # The dilated kernel must fit the padded input at least once on both axes: extent <= max_in + padding.
    span_h, span_w = max_in + pad[0] + pad[2], max_in + pad[1] + pad[3]
    kh, kw = draw(st.integers(1, min(7, span_h)), "kh"), draw(st.integers(1, min(7, span_w)), "kw")
    stride = draw(st.integers(1, 4), "sy"), draw(st.integers(1, 4), "sx")
    rooms = [(span - 1) // (k - 1) for span, k in ((span_h, kh), (span_w, kw)) if k > 1]
    dil = draw(st.integers(1, min(7, *rooms)), "dilation") if rooms else 1
    min_h = max(1, dil * (kh - 1) + 1 - pad[0] - pad[2])
    min_w = max(1, dil * (kw - 1) + 1 - pad[1] - pad[3])
    cin = draw(st.integers(1, 3 * cfg.rows + 1), "cin")
    cout = draw(st.integers(1, 2 * cfg.cols + 3), "cout")
    cb = cdiv(cin, cfg.rows)
    w = draw(st.sampled_from([n for n in range(lo, PROPERTY_MAX_HW + 1) if _sizes_after_pool(pool, n) >= min_w]), "w")
    # The band load (the pooled band with pooling) must fit the activation buffer.
    fits = [n for n in range(lo, PROPERTY_MAX_HW + 1) if _sizes_after_pool(pool, n) >= min_h
            and _sizes_after_pool(pool, n) * _sizes_after_pool(pool, w) * cb <= cfg.ibuf_depth]
    h = draw(st.sampled_from(fits), "h")
    return dict(cin=cin, cout=cout, h=h, w=w, k=(kh, kw), stride=stride, pad=pad, dil=dil, pool=pool)


# Examples per engine size come from the hypothesis profile (tests/conftest.py: `ci` by default, `deep` for
# `make test-deep`); the shapes are valid by construction, so every example compares outputs.
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_conv_property(bench, count_compared, data):
    """Random geometry: kernel, stride, padding, dilation, channel counts, sizes, pooled or not, stalls or not."""
    cfg = bench.config
    shape = data.draw(conv_shapes(cfg), "shape")
    seed = data.draw(st.integers(0, 2**32 - 1), "seed")
    stalls = data.draw(st.sampled_from([0, 0.4]), "stalls")
    writes, cmd, out_shape, expect = conv_case(cfg, np.random.default_rng(seed), **shape)
    assert check_command(cfg, cmd) == ErrorCode.NONE, f"the generator made an invalid command: {shape}"
    n = out_shape[0] * out_shape[1] * cdiv(out_shape[2], cfg.rows)
    sim, machine = bench.run(writes, [cmd], [(DST, n)], cmd_addr=CMDS, stalls=stalls)  # compares exactly
    assert sim.status & Status.DONE, f"status {sim.status:#x}"
    _check_against_reference(bench, out_shape, expect, machine)
    count_compared()  # only reached after both exact comparisons


@st.composite
def pool_shapes(draw, cfg: EngineConfig):
    """A standalone POOL geometry valid on ``cfg`` by construction (PyTorch's rules: padding <= kernel / 2).

    The source may be one part of a concatenated tensor (``src_pix`` > blocks) and the destination too.
    Rows of a single word (one pixel wide, one channel block) are in: pooled rows merge back to back.
    """
    k = draw(st.sampled_from([2, 3]), "k")
    ceil_mode = draw(st.booleans(), "ceil_mode")
    pad = draw(st.integers(0, k // 2), "pad")
    sizes = list(range(max(1, k - 2 * pad), PROPERTY_MAX_HW + 1))
    h = draw(st.sampled_from(sizes), "h")
    w = draw(st.sampled_from(sizes), "w")
    c = draw(st.integers(1, min(3 * cfg.rows + 1, cfg.pool_max_cb * cfg.rows)), "channels")
    src_gap = draw(st.integers(0, 2), "src_gap")   # extra words per source pixel (0: contiguous)
    dst_gap = draw(st.integers(0, 2), "dst_gap")   # extra words per output pixel
    return dict(k=k, ceil_mode=ceil_mode, pad=pad, c=c, h=h, w=w, src_gap=src_gap, dst_gap=dst_gap)


def run_pool(bench, rng, *, k, ceil_mode, pad, c, h, w, src_gap=0, dst_gap=0, stalls=0.0):
    """A standalone POOL on both engines (compared exactly, gaps included), then against the loop reference."""
    R = bench.config.rows
    x = rng.integers(-128, 128, (c, h, w))
    oh, ow = pool_out_size(h, k, 2, pad, ceil_mode), pool_out_size(w, k, 2, pad, ceil_mode)
    cb = cdiv(c, R)
    src_pix, dst_pix = cb + src_gap, cb + dst_gap
    # The source pixels `src_pix` words apart, the gaps filled with noise the pool must not read.
    src = rng.integers(-128, 128, (h * w, src_pix, R)).astype(np.int8)
    src[:, :cb] = pack_activation(x, R).reshape(h * w, cb, R)
    cmd = pack_command(Opcode.POOL, load=dict(src=SRC, src_rows=h, src_w=w, cb=cb, src_pix=src_pix if src_gap else 0,
                                              pool=1, pool_k=k, pool_pad_t=pad, pool_pad_l=pad),
                       out_h=oh, out_w=ow, dst=DST, dst_pix=dst_pix)
    assert check_command(bench.config, cmd) == ErrorCode.NONE, "an invalid POOL command"
    n = oh * ow * dst_pix
    sim, machine = bench.run([(SRC, src.reshape(-1, R))], [cmd], [(DST, n)], cmd_addr=CMDS, stalls=stalls)
    assert sim.status & Status.DONE, f"status {sim.status:#x}"
    got = unpack_activation(machine.mem[DST:DST + n], c, oh, ow, R, pix_words=dst_pix)
    expect = maxpool_reference(x, k=k, stride=2, pad=(pad, pad), out_hw=(oh, ow))
    bad = np.argwhere(got != expect)
    assert not len(bad), (f"golden machine disagrees with the loop reference on {len(bad)} outputs; first "
                          f"(channel, y, x): {[tuple(int(v) for v in b) for b in bad[:8]]}")


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_pool_property(bench, count_compared, data):
    """Random max pools: kernel, ceil mode, padding, channels, sizes, strided source and destination, stalls."""
    shape = data.draw(pool_shapes(bench.config), "shape")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), "seed"))
    run_pool(bench, rng, **shape, stalls=data.draw(st.sampled_from([0, 0.4]), "stalls"))
    count_compared()  # only reached after both exact comparisons


@pytest.mark.parametrize("k", [2, 3])
def test_pool_rows_of_one_word(bench, k):
    """One pixel wide, one channel block, padding 1: every source row is one word, and consecutive rows merge
    into the same pooled word back to back (the merge's read in the cycle the previous write lands)."""
    run_pool(bench, np.random.default_rng(0), k=k, ceil_mode=False, pad=1, c=1, h=6, w=1)


@pytest.mark.parametrize("what", list(bad_commands(EngineConfig())))
def test_check_command_matches_spec(what):
    """The Python spec of the decoder's checks gives the documented code (the gateware is compared above)."""
    cmd, code = bad_commands(EngineConfig())[what]
    assert check_command(EngineConfig(), cmd) == code

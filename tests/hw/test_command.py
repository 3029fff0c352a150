"""The command's products, checks and micro-operations, each component alone, against hw.isa's spec."""

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, Shape
from amaranth.sim import Simulator

from hw.command import CommandChecker, CommandProducts, MicroOpDecoder, ProductsLayout
from hw.isa import EngineConfig, ErrorCode, Opcode, check_command, pack_command, unpack_command
from hw.layout import cdiv

from .test_engine import _good_conv, bad_commands


def _good_commands(cfg):
    R, load = cfg.rows, dict(src=0x1000, src_rows=4, src_w=4, cb=1)
    return [
        _good_conv(cfg),
        _good_conv(cfg, load_pool=1, load_pool_k=3, load_pool_pad_t=1, load_pool_pad_l=1, load_src_rows=7,
                   load_src_w=7),
        pack_command(Opcode.FIRE, load=load, in_h=4, in_w=4, out_h=4, squeeze=R, expand1=R, expand3=R, sq_ibuf=16,
                     w_sq=0x100, w_e1=0x200, w_e3=0x300, dst=0x400),
        pack_command(Opcode.POOL, load=dict(load, pool=1, pool_k=2), out_h=2, out_w=2, dst=0x400, dst_pix=1),
        pack_command(Opcode.GAP, load=load, m0=1 << 30, shift=3, dst=0x400),
    ]


def _commands(cfg, count, seed):
    """Good commands, the documented bad ones, and random bit flips of them (good and bad ones)."""
    rng = np.random.default_rng(seed)
    base = _good_commands(cfg) + [raw for raw, _ in bad_commands(cfg).values()]
    out = list(base)
    for _ in range(count):
        raw = bytearray(base[int(rng.integers(len(base)))])
        for _ in range(int(rng.integers(1, 4))):
            raw[int(rng.integers(1, 40))] ^= 1 << int(rng.integers(8))
        out.append(bytes(raw))
    return out


def _products(op, c, rows):
    """The model of CommandProducts: each product the opcode uses (None where it leaves one unused)."""
    ld = c.load
    out = dict.fromkeys(("pooled_pixels", "pooled_words", "squeeze_words", "row_words", "squeeze_row_words",
                         "out_pixels"))
    out.update(src_pixels=ld.src_rows * ld.src_w, src_words=ld.src_rows * ld.src_w * ld.cb)
    if op == Opcode.GAP:
        return out
    pooled_h, pooled_w = (c.out_h, c.out_w) if op == Opcode.POOL else (c.in_h, c.in_w)
    pooled = pooled_h * pooled_w
    out.update(pooled_pixels=pooled, pooled_words=pooled * ld.cb, row_words=pooled_w * ld.cb)
    if op == Opcode.FIRE:
        sq_cb = cdiv(c.squeeze, rows)
        out.update(squeeze_words=pooled * sq_cb, squeeze_row_words=c.in_w * sq_cb, out_pixels=c.out_h * c.in_w)
    elif op == Opcode.CONV:
        out.update(squeeze_words=0, out_pixels=c.out_h * c.out_w)
    return out


@pytest.mark.parametrize("cfgkw", [dict(), dict(rows=2, cols=4, ibuf_depth=1024, mem_addr_bits=16)])
def test_products_and_checks_match_the_spec(cfgkw):
    cfg = EngineConfig(**cfgkw)
    commands = _commands(cfg, 60, seed=cfg.rows)
    products, checker = CommandProducts(cfg), CommandChecker(cfg)
    mismatches = []

    async def bench(ctx):
        for raw in commands:
            value = int.from_bytes(raw, "little")
            ctx.set(products.cmd, value)
            ctx.set(checker.cmd, value)
            ctx.set(products.run, 1)
            cycles = 0
            while not ctx.get(products.done):
                await ctx.tick()
                cycles += 1
                assert cycles < 200, "the products never finished"
            await ctx.tick()
            ctx.set(products.run, 0)
            got = ctx.get(products.products)
            ctx.set(checker.products, got)
            ctx.set(checker.sample, 1)
            await ctx.tick()
            ctx.set(checker.sample, 0)
            ctx.set(checker.encode, 1)
            await ctx.tick()
            ctx.set(checker.encode, 0)
            want = check_command(cfg, raw)
            if ctx.get(checker.error) != want:
                mismatches.append(("error", raw.hex(), ctx.get(checker.error), want))
            op, c = unpack_command(raw)
            if op is None:
                continue
            for name, value_want in _products(op, c, cfg.rows).items():
                mask = (1 << Shape.cast(ProductsLayout[name].shape).width) - 1
                if value_want is not None and getattr(got, name) != value_want & mask:
                    mismatches.append((name, raw.hex(), getattr(got, name), value_want))

    sim = Simulator(_Both(products, checker))
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not mismatches, f"{len(mismatches)} mismatches (what, command, got, expected), first: {mismatches[:4]}"
    good = sum(check_command(cfg, raw) == ErrorCode.NONE for raw in commands)
    assert good >= 5, f"only {good} good commands were tried"


class _Both(Elaboratable):
    """Two components simulated side by side."""

    def __init__(self, *parts):
        self.parts = parts

    def elaborate(self, platform):
        m = Module()
        for i, part in enumerate(self.parts):
            m.submodules[f"part{i}"] = part
        return m


def test_decoder_fire_stages():
    """FIRE's four convolutions: where each reads, what it computes, where it writes."""
    cfg = EngineConfig(rows=4, cols=8)
    R = cfg.rows
    fire = dict(load=dict(src=0x100, src_rows=5, src_w=6, cb=3, ibuf=10), in_h=5, in_w=6, halo_top=1, out_h=4,
                squeeze=10, expand1=8, expand3=12, sq_ibuf=200, zp_in=3, zp_sq=-4, zp_out=5, sq_min=-4,
                sq_max=100, out_min=5, out_max=90, w_sq=0x1000, w_e1=0x2000, w_e3=0x3000, dst=0x9000)
    raw = pack_command(Opcode.FIRE, **fire)
    sq_cb, e1_cb, e3_cb = cdiv(10, R), cdiv(8, R), cdiv(12, R)
    products = {"src_pixels": 30, "src_words": 90, "pooled_pixels": 30, "pooled_words": 90,
                "squeeze_words": 30 * sq_cb, "row_words": 18, "squeeze_row_words": 6 * sq_cb, "out_pixels": 24}
    want = {
        1: dict(in_base=10, in_cb=3, kh=1, pad_t=0, pad_l=0, out_h=5, cout=10, wblob=0x1000, dst=200, dst_ibuf=1,
                dst_pix=sq_cb, row_words=18, n_pix=30, zp_in=3, zp_out=-4),
        2: dict(in_base=200, in_cb=sq_cb, kh=1, pad_t=-1, pad_l=0, out_h=4, cout=8, wblob=0x2000, dst=0x9000,
                dst_ibuf=0, dst_pix=e1_cb + e3_cb, row_words=6 * sq_cb, n_pix=24, zp_in=-4, zp_out=5),
        3: dict(in_base=200, in_cb=sq_cb, kh=3, pad_t=0, pad_l=1, out_h=4, cout=12, wblob=0x3000,
                dst=0x9000 + e1_cb, dst_ibuf=0, dst_pix=e1_cb + e3_cb, row_words=6 * sq_cb, n_pix=24, zp_in=-4,
                zp_out=5),
    }
    dut = MicroOpDecoder(cfg)
    mismatches = []

    async def bench(ctx):
        ctx.set(dut.cmd, int.from_bytes(raw, "little"))
        ctx.set(dut.products, products)
        for stage, fields in want.items():
            ctx.set(dut.conv_stage, stage)
            op = ctx.get(dut.conv)
            mismatches.extend((stage, k, getattr(op, k), v) for k, v in fields.items() if getattr(op, k) != v)
        load = ctx.get(dut.load)
        mismatches.extend(("load", k, getattr(load, k), v) for k, v in
                          dict(src=0x100, cb=3, ibuf=10, n_words=90, orw=18, out_h=5, out_w=6).items()
                          if getattr(load, k) != v)

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    assert not mismatches, f"(stage, field, got, expected): {mismatches}"


def test_conv_limits_are_what_the_fields_hold():
    """The compiler's limits (hw.isa.MAX_*) and the ConvCmd fields agree: the largest value packs and reads back."""
    from hw.isa import MAX_DILATION, MAX_KERNEL, MAX_PAD, ConvCmd

    for field, limit in (("kh", MAX_KERNEL), ("kw", MAX_KERNEL), ("dil", MAX_DILATION), ("pad_l", MAX_PAD),
                         ("pad_t", MAX_PAD)):
        shape = Shape.cast(ConvCmd.members[field])
        largest = (1 << (shape.width - shape.signed)) - 1
        assert largest == limit, f"ConvCmd.{field} holds up to {largest}, hw.isa says {limit}"

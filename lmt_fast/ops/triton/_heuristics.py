"""Launch plans: which path a call takes (one-pass, looped, split-HW), its tile shape and warp count.

Only shapes and a few tuning numbers go in, so the choice is testable without a GPU. The three paths:

one_pass  one program per (n, channel tile) holds the whole H*W row on chip: x is read once.
looped    one program per (n, channel tile) sweeps the row twice (statistics, then the write); the
          second sweep starts from the end of the row, the part likeliest to be still in L2.
split     when N * C programs cannot fill the GPU, H*W is cut into `splits` ranges: a partial-moments
          kernel writes (weight, weighted mean, M2) per range, a tiny kernel combines them, and an
          elementwise kernel writes y. LayerNorm always takes this path unless a whole sample fits.

A tile is BLOCK_C channels x BLOCK_P pixels. For NCHW the pixels are contiguous, so tiles are long in P;
for channels_last the channels are contiguous, so tiles take several channels (>= 8) to keep loads whole.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from dataclasses import dataclass
from typing import Optional

import torch

ONE_PASS, LOOPED, SPLIT = "one_pass", "looped", "split"
PATHS = (ONE_PASS, LOOPED, SPLIT)

DEFAULT_SM_COUNT = 132  # H100 SXM; what the plan assumes when no GPU is visible (interpreter tests)

# Short rows are packed several channels to a program so that each program moves at least this many
# elements (NCHW); fewer makes the launch and the reduction tree dominate.
_PACK_TARGET = 2048
# channels_last tiles: at least 8 channels (32 B of fp32) so a pixel's channels fill a sector, at
# most 64 so a small map still yields enough programs.
_CL_MIN_BLOCK_C, _CL_MAX_BLOCK_C, _CL_CHUNK_BLOCK_C = 8, 64, 32
# Split rows so that the GPU gets about this many programs per SM.
_SPLIT_PROGRAMS_PER_SM = 4
# Elements per program of the split path's elementwise write (8 per thread at 4 warps).
_ELEMENTWISE_TILE = 1024


@dataclass(frozen=True)
class Tuning:
    """Numbers the plan depends on. Tests shrink them to push small shapes down every path."""

    resident_cap: int = 16384  # most elements of x one program keeps on chip (halved for heavy tiles)
    chunk: int = 4096  # elements of x per loop iteration (looped and split paths)
    sm_count: Optional[int] = None  # None: ask the device; DEFAULT_SM_COUNT when there is no GPU
    split_min_row: int = 8192  # a program's row (channels x H*W) shorter than this is never split
    fill_factor: float = 2.0  # split when fewer than fill_factor * SMs programs would run
    force_path: Optional[str] = None  # one of PATHS: tests and benchmarks pin a path

    def __post_init__(self):
        for name in ("resident_cap", "chunk"):
            value = getattr(self, name)
            if value < 1 or value & (value - 1):
                raise ValueError(f"Tuning.{name} must be a power of two >= 1, got {value}")
        if self.force_path is not None and self.force_path not in PATHS:
            raise ValueError(f"Tuning.force_path must be one of {PATHS} or None, got {self.force_path!r}")


_current = Tuning()


def current_tuning() -> Tuning:
    return _current


@contextlib.contextmanager
def tuning(**changes):
    """Temporarily change the tuning: ``with tuning(resident_cap=64, force_path="looped"): ...``."""
    global _current
    saved = _current
    _current = dataclasses.replace(saved, **changes)
    try:
        yield _current
    finally:
        _current = saved


@dataclass(frozen=True)
class Plan:
    path: str
    block_c: int
    block_p: int
    splits: int  # pixel ranges per row (1 unless path == SPLIT)
    split_len: int  # pixels per range, a multiple of block_p
    num_warps: int

    def programs(self, n: int, c: int) -> int:
        """Programs the statistics pass launches."""
        return n * cdiv(c, self.block_c) * self.splits


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(v: int) -> int:
    return 1 << max(0, int(v) - 1).bit_length()


@functools.lru_cache(maxsize=None)
def _device_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device, t: Tuning) -> int:
    if t.sm_count is not None:
        return t.sm_count
    if device.type == "cuda" and torch.cuda.is_available():
        return _device_sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return DEFAULT_SM_COUNT


def num_warps_for(elements: int, per_thread: int = 16) -> int:
    """Warps for a tile of `elements` at about `per_thread` elements per thread (1 to 32 warps).

    16 fp32 elements a thread keeps the one-pass kernel at <= 64 registers with 32 warps (ptxas, sm_90);
    channels_last looped tiles need about twice the registers per element, so they use 8.
    """
    return max(1, min(32, elements // (32 * per_thread)))


def _resident_budget(t: Tuning, channels_last: bool, regions: int, whole_sample: bool = False) -> int:
    """Most elements a one-pass tile may hold: half the cap where registers run short (spills seen in
    ptxas for sm_90 with three or more regions, channels_last tiles, and layer_norm's sample tiles)."""
    heavy = channels_last or regions >= 3 or whole_sample
    return max(1, t.resident_cap // 2) if heavy else t.resident_cap


def _resident_tile(c: int, hw: int, channels_last: bool, t: Tuning, min_programs: float, n: int,
                   regions: int):
    """(block_c, block_p) of a one-pass tile, or None when the row does not fit."""
    budget = _resident_budget(t, channels_last, regions)
    block_p = next_pow2(hw)
    if block_p > budget:
        return None
    c_pow2 = next_pow2(c)
    if channels_last:
        block_c = min(c_pow2, _CL_MAX_BLOCK_C, budget // block_p)
        if block_c < min(c_pow2, _CL_MIN_BLOCK_C):
            return None  # too few contiguous channels per pixel: loads would waste most of each sector
        floor = min(c_pow2, _CL_MIN_BLOCK_C)
    else:
        block_c = min(c_pow2, max(1, _PACK_TARGET // block_p), budget // block_p)
        floor = 1
    while block_c > floor and n * cdiv(c, block_c) < min_programs:
        block_c //= 2  # fewer channels per program, more programs
    return block_c, block_p


def _chunk_tile(c: int, hw: int, channels_last: bool, t: Tuning):
    """(block_c, block_p) of one iteration of the looped / split kernels."""
    hw_pow2 = next_pow2(hw)
    if channels_last:
        block_c = min(next_pow2(c), _CL_CHUNK_BLOCK_C)
        block_p = min(max(1, t.chunk // block_c), hw_pow2)
    else:
        block_p = min(t.chunk, hw_pow2)
        block_c = min(next_pow2(c), max(1, t.chunk // block_p))
    return block_c, block_p


def _min_block_c(c: int, channels_last: bool) -> int:
    return min(next_pow2(c), _CL_MIN_BLOCK_C) if channels_last else 1


def _split_plan(n, c, hw, channels_last, t, sms, force) -> Plan:
    block_c, block_p = _chunk_tile(c, hw, channels_last, t)
    target = _SPLIT_PROGRAMS_PER_SM * sms
    max_splits = cdiv(hw, block_p)
    # Short rows cannot be cut much: take fewer channels per program instead.
    while block_c > _min_block_c(c, channels_last) and n * cdiv(c, block_c) * max_splits < target:
        block_c //= 2
    rows = n * cdiv(c, block_c)
    splits = min(max_splits, max(1, cdiv(target, rows)))
    if force:
        splits = max(splits, min(2, max_splits))  # a forced split really splits when it can
    split_len = cdiv(cdiv(hw, splits), block_p) * block_p
    splits = cdiv(hw, split_len)
    return Plan(SPLIT, block_c, block_p, splits, split_len, _chunk_warps(block_c, block_p, channels_last))


def _chunk_warps(block_c: int, block_p: int, channels_last: bool) -> int:
    return num_warps_for(block_c * block_p, per_thread=8 if channels_last else 16)


def plan_rows(n: int, c: int, hw: int, channels_last: bool, device: torch.device,
              t: Optional[Tuning] = None, regions: int = 1) -> Plan:
    """Plan for statistics per (n, c) row over H*W pixels (instance norm, AdaIN, masked moments);
    `regions` = mask channels the kernel handles (register pressure grows with it)."""
    t = t or _current
    sms = sm_count(device, t)
    min_programs = t.fill_factor * sms
    resident = _resident_tile(c, hw, channels_last, t, min_programs, n, regions)
    chunk_c, chunk_p = _chunk_tile(c, hw, channels_last, t)

    path = t.force_path
    if path is None:
        if resident is not None and n * cdiv(c, resident[0]) >= sms:
            path = ONE_PASS  # a full wave of one-pass programs beats reading x twice
        elif (n * cdiv(c, chunk_c) < min_programs and chunk_c * hw >= t.split_min_row
              and cdiv(hw, chunk_p) > 1):
            path = SPLIT  # too few rows to fill the GPU, and each is long enough to cut
        else:
            path = ONE_PASS if resident is not None else LOOPED
    if path == SPLIT:
        return _split_plan(n, c, hw, channels_last, t, sms, force=t.force_path == SPLIT)
    if path == ONE_PASS:
        if resident is None:
            raise ValueError(f"one-pass path forced but a row of {hw} pixels (x {c} channels, "
                             f"channels_last={channels_last}, {regions} regions) does not fit "
                             f"resident_cap={t.resident_cap}")
        block_c, block_p = resident
        return Plan(path, block_c, block_p, 1, hw, num_warps_for(block_c * block_p))
    return Plan(path, chunk_c, chunk_p, 1, hw, _chunk_warps(chunk_c, chunk_p, channels_last))


def plan_samples(n: int, c: int, hw: int, channels_last: bool, device: torch.device,
                 t: Optional[Tuning] = None) -> Plan:
    """Plan for statistics per sample over C*H*W (layer_norm): one program per sample when the sample
    fits on chip and there are enough samples, else the split path (a forced "looped" means split with
    one range per channel tile: per-sample loops would serialise the whole sample in one program)."""
    t = t or _current
    sms = sm_count(device, t)
    block_c, block_p = next_pow2(c), next_pow2(hw)
    fits = block_c * block_p <= _resident_budget(t, channels_last, 1, whole_sample=True)
    path = t.force_path
    if path is None:
        few_samples = n < t.fill_factor * sms
        path = SPLIT if (not fits or (few_samples and c * hw >= t.split_min_row)) else ONE_PASS
    if path == ONE_PASS:
        if not fits:
            raise ValueError(f"one-pass path forced but a sample of {c} x {hw} does not fit "
                             f"resident_cap={t.resident_cap}")
        return Plan(ONE_PASS, block_c, block_p, 1, hw, num_warps_for(block_c * block_p))
    plan = _split_plan(n, c, hw, channels_last, t, sms, force=path == SPLIT)
    if path == LOOPED:
        plan = dataclasses.replace(plan, splits=1, split_len=cdiv(hw, plan.block_p) * plan.block_p)
    return plan


def elementwise_tile(c: int, hw: int, channels_last: bool):
    """(block_c, block_p, num_warps) of the split path's write kernel: small tiles, many programs."""
    if channels_last:
        block_c = min(next_pow2(c), _CL_CHUNK_BLOCK_C)
        block_p = min(max(1, _ELEMENTWISE_TILE // block_c), next_pow2(hw))
    else:
        block_p = min(_ELEMENTWISE_TILE, next_pow2(hw))
        block_c = min(next_pow2(c), max(1, _ELEMENTWISE_TILE // block_p))
    return block_c, block_p, num_warps_for(block_c * block_p, per_thread=8)

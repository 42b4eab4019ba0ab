"""Compile the launcher's kernel variants natively for a GPU target, without a GPU.

Triton's interpreter (how the tests run the kernels on a CPU) does not compile anything, so code that
only the compiler rejects would first show up on a GPU. This module runs the real launchers on small
CPU tensors with launches *recorded* instead of executed, then compiles each recorded variant
(constexprs, pointer dtypes, specialised 1s) to a cubin for the target:

    python -m lmt_fast.ops.triton.aot            # sm_90; TRITON_INTERPRET must be unset

It needs triton's bundled LLVM and ptxas, not a driver. Register and spill counts are reported when a
`ptxas` that accepts the generated PTX is found.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

import torch


def _record_launches(cases):
    """Run each case's launcher call with `launch._launch` recording instead of launching."""
    from . import launch
    from ._heuristics import tuning

    recorded = []
    original = launch._launch

    def record(kernel, grid, args, constexprs, num_warps):
        recorded.append((kernel, args, dict(constexprs), num_warps))

    launch._launch = record
    try:
        for tune, call in cases:
            with tuning(**tune):
                call()
    finally:
        launch._launch = original
    return recorded


def _signature(kernel, args, constexprs):
    """Triton signature + constexprs of a call, with ints equal to 1 specialised as Triton does."""
    names = kernel.arg_names
    signature, values = {}, {}
    for i, name in enumerate(names):
        if name in constexprs:
            signature[name] = "constexpr"
            values[(i,)] = constexprs[name]
            continue
        arg = args[i]
        if isinstance(arg, torch.Tensor):
            signature[name] = "*" + {torch.float32: "fp32", torch.float16: "fp16",
                                     torch.bfloat16: "bf16"}[arg.dtype]
        elif isinstance(arg, bool) or (isinstance(arg, int) and arg == 1):
            signature[name] = "constexpr"
            values[(i,)] = arg
        elif isinstance(arg, int):
            signature[name] = "i32" if -2**31 <= arg < 2**31 else "i64"
        elif isinstance(arg, float):
            signature[name] = "fp32"
        else:
            raise TypeError(f"{kernel.__name__}: cannot type argument {name}={arg!r}")
    return signature, values


def default_cases():
    """Small calls that between them take every kernel and the main constexpr combinations."""
    from . import launch

    gen = torch.Generator().manual_seed(0)

    def x_(dtype, cl=False, shape=(2, 16, 9, 11)):
        x = torch.randn(shape, generator=gen).to(dtype)
        return x.contiguous(memory_format=torch.channels_last) if cl else x

    m3 = torch.rand(2, 3, 9, 11, generator=gen)
    g3, b3 = torch.rand(2, 3, 16, generator=gen), torch.rand(2, 3, 16, generator=gen)
    g2, b2 = torch.rand(2, 16, generator=gen), torch.rand(2, 16, generator=gen)
    w = torch.rand(16, generator=gen)
    small = dict(chunk=64, sm_count=4)
    return [
        (dict(force_path="one_pass"), lambda: launch.highway_adain(x_(torch.float16), m3[:, :1], g2, b2, g2, b2, 1e-5)),
        (dict(force_path="one_pass"), lambda: launch.region_adain(x_(torch.bfloat16, True), m3, g3, b3, "region",
                                                                  1e-5, "lrelu", x_(torch.bfloat16, True))),
        (dict(force_path="looped", **small), lambda: launch.region_adain(x_(torch.float32), m3, g3, b3, "global",
                                                                         1e-5, "relu", None)),
        (dict(force_path="split", **small), lambda: launch.instance_norm(x_(torch.float16, True), w, w, 1e-5,
                                                                         None, x_(torch.float16, True))),
        (dict(force_path="split", **small), lambda: launch.layer_norm(x_(torch.bfloat16), w, None, 1e-5, "relu", None)),
        (dict(force_path="one_pass", resident_cap=65536), lambda: launch.layer_norm(x_(torch.float32), None, w, 1e-5,
                                                                                    None, None)),
        (dict(force_path="one_pass"), lambda: launch.masked_moments(x_(torch.float16), m3.half(), 1e-5)),
        (dict(force_path="split", **small), lambda: launch.masked_moments(x_(torch.float32, True), m3, 1e-5)),
    ]


def _find_ptxas():
    import triton

    bundled = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    for name in ("ptxas-blackwell", "ptxas"):
        path = os.path.join(bundled, name)
        if os.path.exists(path):
            yield path
    if shutil.which("ptxas"):
        yield shutil.which("ptxas")


def _register_usage(ptx: str, arch: str):
    """(registers, spill bytes) from `ptxas -v`, or None when no installed ptxas accepts the PTX."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        for ptxas in _find_ptxas():
            out = subprocess.run([ptxas, "-v", f"-arch={arch}", src, "-o", os.path.join(tmp, "k.cubin")],
                                 capture_output=True, text=True)
            regs = re.search(r"Used (\d+) registers", out.stdout + out.stderr)
            spills = re.search(r"(\d+) bytes spill stores", out.stdout + out.stderr)
            if out.returncode == 0 and regs:
                return int(regs.group(1)), int(spills.group(1)) if spills else 0
    return None


def compile_variants(capability: int = 90, cases=None, usage: bool = False):
    """Compile every recorded variant; returns [(description, registers/spills or None)]."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("unset TRITON_INTERPRET: the interpreter has nothing to compile")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", capability, 32)
    seen, report = set(), []
    for kernel, args, constexprs, num_warps in _record_launches(cases or default_cases()):
        signature, values = _signature(kernel, args, constexprs)
        key = (kernel.__name__, tuple(sorted(signature.items())), tuple(sorted(values.items())), num_warps)
        if key in seen:
            continue
        seen.add(key)
        compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=values),
                                  target=target, options={"num_warps": num_warps})
        flags = ",".join(f"{k}={v}" for k, v in sorted(constexprs.items()))
        desc = f"{kernel.__name__}[warps={num_warps}] {flags}"
        suffix = "a" if capability >= 90 else ""
        report.append((desc, _register_usage(compiled.asm["ptx"], f"sm_{capability}{suffix}") if usage else None))
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capability", type=int, default=90, help="e.g. 80 (A100), 90 (H100/H200)")
    parser.add_argument("--usage", action="store_true", help="report registers and spills (needs ptxas)")
    args = parser.parse_args(argv)
    for desc, usage in compile_variants(args.capability, usage=args.usage):
        extra = "" if usage is None else f"  registers={usage[0]} spill_bytes={usage[1]}"
        print(f"ok  {desc}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Op-family benchmark on the device at hand: runs bench_ops_gpu.py on a CUDA device, else bench_ops_cpu.py.

    python benchmarks/bench_ops.py                       # CUDA when torch sees a GPU, else the CPU
    python benchmarks/bench_ops.py --device cpu --quick  # every other argument goes to the chosen script

The two devices need different timers (per-call perf_counter blocks on the CPU, triton.testing.do_bench
with an L2 flush on the GPU) and different matrices, so each has its own script; their docstrings say
what is measured. This is the one entry point.
"""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = {"cpu": HERE / "bench_ops_cpu.py", "cuda": HERE / "bench_ops_gpu.py"}


def pick_device(argv: list[str]) -> tuple[str, list[str]]:
    """The --device value (removed from argv), or cuda when a GPU is visible and cpu otherwise."""
    rest, device = [], None
    args = iter(argv)
    for arg in args:
        if arg == "--device":
            device = next(args, None)
        elif arg.startswith("--device="):
            device = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = device.split(":")[0]
    if device not in SCRIPTS:
        raise SystemExit(f"--device must be cpu or cuda, got {device!r}")
    return device, rest


def main() -> None:
    device, rest = pick_device(sys.argv[1:])
    script = SCRIPTS[device]
    sys.argv = [str(script), *rest]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()

"""NF4 quantise / dequantise throughput: the course's torch code against bitsandbytes, same tensor.

    python benchmarks/nf4_speed.py                       # 8192x8192 bf16 on CUDA, 2048x2048 on the CPU
    python benchmarks/nf4_speed.py --size 4096 --device cpu --submission assignments/qlora

Throughput is the bf16 tensor's bytes (read by quantise, written by dequantise) per second. The
script also says whether the two implementations agree bit for bit on the tensor. It prints
figures only; nothing here is an assertion on speed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def timed(fn, device: torch.device, repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs, after two warm-up runs."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=None, help="the tensor is size x size (default 8192 on CUDA, 2048 on CPU)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--blocksize", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per figure (default 20 on CUDA, 3 on CPU)")
    parser.add_argument("--submission", default=str(ROOT / "solutions" / "qlora"), help="folder holding qlora.py")
    args = parser.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    size = args.size or (8192 if device.type == "cuda" else 2048)
    repeat = args.repeat or (20 if device.type == "cuda" else 3)
    sys.path.insert(0, str(Path(args.submission).resolve()))
    import qlora
    from bitsandbytes import functional as bnb_functional

    w = torch.randn(size, size, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=torch.bfloat16)
    nbytes = w.numel() * w.element_size()
    bs = args.blocksize

    ours_packed, ours_absmax = qlora.quantize_nf4(w, bs)
    ref_packed, ref_state = bnb_functional.quantize_4bit(w, blocksize=bs, quant_type="nf4")
    same_codes = torch.equal(ours_packed, ref_packed.reshape(-1)) and torch.equal(ours_absmax, ref_state.absmax)
    ours_back = qlora.dequantize_nf4(ref_packed.reshape(-1), ref_state.absmax, w.shape, bs, torch.bfloat16)
    same_values = torch.equal(ours_back, bnb_functional.dequantize_4bit(ref_packed, ref_state))

    rows = [
        ("quantise", "course (torch)", timed(lambda: qlora.quantize_nf4(w, bs), device, repeat)),
        ("quantise", "bitsandbytes", timed(lambda: bnb_functional.quantize_4bit(w, blocksize=bs, quant_type="nf4"),
                                           device, repeat)),
        ("dequantise", "course (torch)", timed(lambda: qlora.dequantize_nf4(ours_packed, ours_absmax, w.shape, bs,
                                                                            torch.bfloat16), device, repeat)),
        ("dequantise", "bitsandbytes", timed(lambda: bnb_functional.dequantize_4bit(ref_packed, ref_state),
                                             device, repeat)),
    ]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"NF4 on a {size}x{size} bfloat16 tensor ({nbytes / 2**20:.0f} MiB), blocksize {bs}, {name}")
    print(f"bit-identical with bitsandbytes: codes {'yes' if same_codes else 'NO'}, "
          f"dequantised values {'yes' if same_values else 'NO'}")
    print(f"{'op':<11} {'implementation':<16} {'time':>10} {'throughput':>12}")
    for op, impl, seconds in rows:
        print(f"{op:<11} {impl:<16} {seconds * 1e3:>8.3f}ms {nbytes / seconds / 1e9:>9.2f} GB/s")


if __name__ == "__main__":
    main()

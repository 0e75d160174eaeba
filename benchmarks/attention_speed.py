"""Attention speed on CPU: our attention against torch's scaled_dot_product_attention.

Times ``scaled_dot_product_attention`` of each given implementation (default: the reference
solution ``solutions/attention`` and the student-facing ``assignments/attention``) on
batch 4, heads 8, seq 512, head_dim 64, next to torch's SDPA (its default CPU kernel and its
math backend, which, like ours, builds the full weight matrix). Prints figures; asserts nothing.

    python benchmarks/attention_speed.py                       # solution and stubs
    python benchmarks/attention_speed.py path/to/submission    # any folder holding attention.py
    python benchmarks/attention_speed.py --threads 4 --repeats 10
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (4, 8, 512, 64)  # batch, heads, seq, head_dim


def load(folder: Path):
    spec = importlib.util.spec_from_file_location(f"attention_{abs(hash(folder))}", folder / "attention.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def best_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def torch_math(q, k, v, causal):
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path,
                        default=[ROOT / "solutions" / "attention", ROOT / "assignments" / "attention"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the grading worker uses 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(*SHAPE, generator=gen) for _ in range(3))
    print(f"shape (batch, heads, seq, head_dim) = {SHAPE}, float32, {args.threads} thread(s), best of {args.repeats}")
    print(f"{'implementation':<44} {'causal':>6} {'time':>10} {'/ sdpa':>8} {'/ math':>8}")
    with torch.no_grad():
        for causal in (False, True):
            sdpa = best_time(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), args.repeats)
            math_ = best_time(lambda: torch_math(q, k, v, causal), args.repeats)
            rows = [("torch SDPA (default CPU kernel)", sdpa), ("torch SDPA (math backend)", math_)]
            for folder in args.folders:
                label = str(folder.resolve().relative_to(ROOT)) if folder.resolve().is_relative_to(ROOT) else str(folder)
                try:
                    module = load(folder)
                    t = best_time(lambda: module.scaled_dot_product_attention(q, k, v, causal=causal), args.repeats)
                except NotImplementedError as exc:
                    rows.append((label, f"not implemented ({exc})"))
                    continue
                rows.append((label, t))
            for label, t in rows:
                if isinstance(t, str):
                    print(f"{label:<44} {str(causal):>6}   {t}")
                else:
                    print(f"{label:<44} {str(causal):>6} {t * 1e3:>8.1f}ms {t / sdpa:>7.2f}x {t / math_:>7.2f}x")


if __name__ == "__main__":
    main()

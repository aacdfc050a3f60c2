"""PyTorch's side of `examples/backend_info.rs`: an f32 matmul's GFLOP/s and
scaled-dot-product attention at the mid-size MMDiT's joint attention shape, on the CPU with
2 threads (as many as the machine the figures in docs/benchmarks.md come from).

    /work/peer-venv-2.9/bin/python scripts/op_peer_bench.py [--size 1024] [--attention 1 6 589 64]
"""

import argparse
import time

import torch


def median_seconds(run, budget):
    run()
    times = []
    started = time.perf_counter()
    while time.perf_counter() - started < budget or len(times) < 5:
        begin = time.perf_counter()
        run()
        times.append(time.perf_counter() - begin)
    times.sort()
    return times[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--attention", type=int, nargs=4, default=[1, 6, 589, 64])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    size = args.size
    a = torch.randn(size, size, generator=generator) / size**0.5
    b = torch.randn(size, size, generator=generator) / size**0.5
    seconds = median_seconds(lambda: (a @ b).sum().item(), args.seconds)
    print(f"torch {torch.__version__}, {args.threads} threads")
    print(f"matmul f32 {size}x{size}: {2 * size**3 / seconds / 1e9:9.1f} GFLOP/s")
    batch, heads, tokens, head_dim = args.attention
    q, k, v = (torch.randn(batch, heads, tokens, head_dim, generator=generator) for _ in range(3))
    attend = torch.nn.functional.scaled_dot_product_attention
    seconds = median_seconds(lambda: attend(q, k, v).sum().item(), args.seconds)
    flop = 4 * batch * heads * tokens * tokens * head_dim
    print(
        f"attention f32 {batch}x{heads}x{tokens}x{head_dim}: {seconds * 1e3:8.3f} ms "
        f"({flop / seconds / 1e9:.1f} GFLOP/s)"
    )


if __name__ == "__main__":
    main()

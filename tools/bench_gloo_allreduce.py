"""Yardstick for bench_allreduce: PyTorch's Gloo ring all-reduce (fp32) of the
same tensor size over N processes on loopback. Dev-only: needs torch.

    python3 tools/bench_gloo_allreduce.py --nodes 4 --elems 16777216 --rounds 3
"""
import argparse
import os
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, world, elems, rounds, port, queue):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(rank + 1)
    x = torch.randn(elems, generator=g) * 1e-3
    times = []
    for _ in range(rounds + 1):
        y = x.clone()
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        y /= world
        times.append(time.perf_counter() - t0)
    queue.put((rank, times[1:]))  # the first round warms up
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--elems", type=int, default=1 << 24)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--port", type=int, default=29533)
    a = p.parse_args()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, a.nodes, a.elems, a.rounds, a.port, q)) for r in range(a.nodes)]
    for pr in procs:
        pr.start()
    results = [q.get() for _ in procs]
    for pr in procs:
        pr.join()
    worst = [max(t[i] for _, t in results) for i in range(a.rounds)]
    print(f"gloo fp32 all-reduce: {a.nodes} processes, {a.elems} floats ({a.elems * 4 / 1e6:.1f} MB): "
          + ", ".join(f"{w:.3f} s" for w in worst) + f" (torch {torch.__version__})")


if __name__ == "__main__":
    main()

"""The peer of benches/allreduce.rs: torch.distributed.all_reduce (SUM, float32) of the same sizes,
under torchrun. Prints one JSON line on rank 0: {"MiB": median seconds, ...}."""
import argparse
import json
import os
import time

import torch
import torch.distributed as dist


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,16,64")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device("cuda") if cuda else torch.device("cpu")
    out = {}
    for mib in [int(s) for s in args.sizes.split(",")]:
        t = torch.ones(mib * (1 << 20) // 4, dtype=torch.float32, device=device)
        times = []
        for i in range(args.iters + 2):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            dist.all_reduce(t)
            if cuda:
                torch.cuda.synchronize()
            if i >= 2:
                times.append(time.perf_counter() - start)
        times.sort()
        out[str(mib)] = times[len(times) // 2]
    if dist.get_rank() == 0:
        print(json.dumps(out))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""`python -m benchmarks [stages|service|encoding|realtime|gateway|all|costs|capacity] [--quick] [--checkpoint DIR]`.

`costs` measures each engine's step cost against its batch size; `capacity` sizes the stages from
those (benchmarks/out/costs.json, or --costs FILE), and with --check runs the service runs it predicts;
`gateway` compares time to first audio through the HTTP gateway with gRPC's."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("which", nargs="?", default="all",
                   choices=["all", "stages", "service", "encoding", "realtime", "gateway", "costs", "capacity"])
    p.add_argument("--quick", action="store_true", help="shorter runs (a few minutes in all)")
    p.add_argument("--checkpoint", type=Path, help="a bark-small-sized checkpoint directory "
                                                   "(default: a random one under ~/.cache/barkstream/random-small)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, one per core)")
    p.add_argument("--no-hf", action="store_true", help="skip the transformers baseline")
    p.add_argument("--device", default="cpu", help="cpu or cuda (engines then replay CUDA graphs)")
    p.add_argument("--service-dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="the servers' dtype in the service benchmark")
    p.add_argument("--costs", type=Path, help="capacity: the stage cost curves (default benchmarks/out/costs.json)")
    p.add_argument("--streams", default="10,100,1000", help="capacity: concurrent streams to size for")
    p.add_argument("--rtf", type=float, default=1.0, help="capacity: target real-time factor (wall / audio)")
    p.add_argument("--ttfa", type=float, default=2.0, help="capacity: target time to first audio, seconds")
    p.add_argument("--max-batch", type=int, default=8, help="capacity: batch rows per engine (BARKSTREAM_MAX_BATCH)")
    p.add_argument("--first-segment", type=int, default=100, help="capacity: the first segment's semantic tokens")
    p.add_argument("--segment", type=int, default=499, help="capacity: the later segments' semantic tokens")
    p.add_argument("--check", action="store_true",
                   help="capacity: measure the cost curves, predict the split service runs (N=4, 16; one replica "
                        "per stage and two of the slowest), run them and compare")
    args = p.parse_args(argv)
    if args.which == "capacity" and not args.check:  # from a cost run's JSON: no model, no torch
        from . import capacity

        work = capacity.Workload(args.segment, args.first_segment, max_batch=args.max_batch)
        capacity.main(args.costs, tuple(int(s) for s in args.streams.split(",")), args.rtf, args.ttfa, work)
        return 0
    if args.which == "encoding":  # the orchestrator's codecs alone: no model, no torch, seconds
        from . import service

        service.encoding_main()
        return 0

    import torch

    from .common import random_small_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = random_small_checkpoint(args.checkpoint) if args.which not in ("realtime", "gateway") else None
    t0 = time.perf_counter()
    if args.which in ("all", "stages"):
        from . import stages

        stages.main(checkpoint, args.quick, with_hf=not args.no_hf, device=args.device)
    if args.which == "costs":
        from . import costs

        costs.main(checkpoint, args.quick, device=args.device, dtype=args.service_dtype)
    if args.which == "capacity":
        from . import capacity_check

        capacity_check.main(checkpoint, args.quick, device=args.device, dtype=args.service_dtype)
    if args.which in ("all", "service"):
        from . import service

        service.main(checkpoint, args.quick, threads=args.threads, device=args.device, dtype=args.service_dtype)
        service.encoding_main()
    if args.which in ("all", "realtime"):
        from . import realtime

        realtime.main(args.quick)
    if args.which in ("all", "gateway"):
        from . import gateway

        gateway.main(args.checkpoint, args.quick)  # default: the tiny random checkpoint (see gateway.py)
    print(f"\nbenchmarks done in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m benchmarks [stages|service|encoding|realtime|gateway|all] [--quick] [--checkpoint DIR] [--threads N]`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("which", nargs="?", default="all",
                   choices=["all", "stages", "service", "encoding", "realtime", "gateway"])
    p.add_argument("--quick", action="store_true", help="shorter runs (a few minutes in all)")
    p.add_argument("--checkpoint", type=Path, help="a bark-small-sized checkpoint directory "
                                                   "(default: a random one under ~/.cache/barkstream/random-small)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, one per core)")
    p.add_argument("--no-hf", action="store_true", help="skip the transformers baseline")
    p.add_argument("--device", default="cpu", help="cpu or cuda (engines then replay CUDA graphs)")
    p.add_argument("--service-dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="the servers' dtype in the service benchmark")
    args = p.parse_args(argv)
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

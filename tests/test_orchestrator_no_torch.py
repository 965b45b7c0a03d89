"""An orchestrator-only process runs without importing torch.

Its image and its memory should not pay for torch: it only tokenizes text, picks
voices and calls the stages. The check needs a fresh interpreter, since the test
process itself has torch loaded by other tests and fixtures.
"""

from __future__ import annotations

import json
import subprocess
import sys

# Runs in the child: build and warm an orchestrator-only App against stage addresses nothing
# listens on (gRPC channels connect lazily, so the warm-up does not wait for them).
CHILD = """
import asyncio, json, sys

from barkstream.services.app import App, ServeConfig
from barkstream.services.common.config import ServerConfig

checkpoint = sys.argv[1]
nowhere = "127.0.0.1:1"
app = App("orchestrator", ServeConfig(checkpoint=checkpoint, semantic_target=nowhere, coarse_target=nowhere,
                                      fine_target=nowhere, codec_target=nowhere), ServerConfig(port=0))


async def main():
    await app.warmup()
    pipeline = app.servicers["orchestrator"].pipeline.get()
    report = {
        "torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")),
        "tokenizer": pipeline.tokenizer is not None,
        "voices": pipeline.voices is not None,
        "stages": pipeline.stages is not None,
    }
    await app.close()
    print(json.dumps(report))


asyncio.run(main())
"""


def test_orchestrator_only_warmup_does_not_import_torch(tiny_checkpoint_dir):
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tiny_checkpoint_dir)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    # The warm-up did its work (otherwise "no torch" would prove nothing) ...
    assert report["tokenizer"] and report["voices"] and report["stages"]
    # ... and loaded no torch module on the way.
    assert report["torch"] == []

#!/usr/bin/env bash
# Here (no GPU): fetch, for a lent GPU machine, the Python packages barkstream needs that its image lacks.
#
# The device machines run Python 3.12 with torch, transformers, tokenizers, safetensors, huggingface_hub,
# numpy, einops, torchaudio and pytest installed, and reach no package index. This puts the rest, as
# cp312 wheels, in .whl/ (ignored by git; ~12 MB), for `run` to carry: then `bash scripts/gpu-check.sh`
# there. Versions are the ones CI tests with.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    grpcio==1.85.3 grpcio-tools==1.85.1 protobuf==7.36.2 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1 \
    opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-semantic-conventions==0.66b2 \
    opentelemetry-proto==1.45.2 opentelemetry-exporter-otlp-proto-common==1.45.2 \
    opentelemetry-exporter-otlp-proto-grpc==1.45.2 opentelemetry-exporter-prometheus==0.66b2 \
    googleapis-common-protos==1.76.0 soxr==1.1.0
python3 -m pip wheel -q --no-deps -w .whl encodec==0.1.1  # published as a source archive only
ls .whl

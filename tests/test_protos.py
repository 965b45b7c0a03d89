"""The barkstream.v1 protos: generated, importable, typed, and following the package conventions."""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path

import pytest
from google.protobuf import descriptor

from barkstream.v1 import common_pb2, stages_pb2, stages_pb2_grpc, tts_pb2, tts_pb2_grpc

V1_DIR = Path(tts_pb2.__file__).parent
PROTO_FILES = sorted(p.name for p in V1_DIR.glob("*.proto"))
MODULES = [common_pb2, stages_pb2, tts_pb2]


def all_enums():
    for module in MODULES:
        yield from module.DESCRIPTOR.enum_types_by_name.values()
        for message in module.DESCRIPTOR.message_types_by_name.values():
            yield from message.enum_types


def test_expected_proto_files_and_no_placeholder():
    assert PROTO_FILES == ["common.proto", "stages.proto", "tts.proto"]
    assert "Ping" not in common_pb2.DESCRIPTOR.message_types_by_name


@pytest.mark.parametrize("name", [f"{p[:-6]}_pb2" for p in PROTO_FILES]
                         + [f"{p[:-6]}_pb2_grpc" for p in PROTO_FILES])
def test_stubs_importable_with_type_stubs(name):
    module = importlib.import_module(f"barkstream.v1.{name}")
    if not name.endswith("_grpc"):
        assert Path(module.__file__).with_suffix(".pyi").is_file(), f"{name}.pyi missing"


def test_package_name():
    for module in MODULES:
        assert module.DESCRIPTOR.package == "barkstream.v1"


def test_enums_start_with_unspecified_zero():
    enums = list(all_enums())
    assert {e.name for e in enums} >= {"AudioEncoding", "Stage", "StopReason"}
    for enum in enums:
        zero = enum.values_by_number[0]
        prefix = "".join("_" + c if c.isupper() else c for c in enum.name).lstrip("_").upper()
        assert zero.name == f"{prefix}_UNSPECIFIED", enum.full_name
        for value in enum.values:
            assert value.name.startswith(prefix + "_"), f"{value.name} lacks the {prefix}_ prefix"


def test_services_and_rpc_shapes():
    tts = tts_pb2.DESCRIPTOR.services_by_name["TextToSpeech"]
    synth = tts.methods_by_name["Synthesize"]
    assert not synth.client_streaming and synth.server_streaming
    voices = tts.methods_by_name["ListVoices"]
    assert not voices.client_streaming and not voices.server_streaming
    session = tts.methods_by_name["StreamingSynthesize"]
    assert session.client_streaming and session.server_streaming

    services = stages_pb2.DESCRIPTOR.services_by_name
    assert set(services) == {"SemanticService", "CoarseService", "FineService", "CodecService"}
    semantic = services["SemanticService"].methods_by_name["Generate"]
    assert (semantic.client_streaming, semantic.server_streaming) == (False, True)
    bidi = [("CoarseService", "Generate"), ("FineService", "Generate"), ("CodecService", "Decode")]
    for service, rpc in bidi:
        method = services[service].methods_by_name[rpc]
        assert method.client_streaming and method.server_streaming, f"{service}.{rpc} must be bidi"
    for name in ("TextToSpeechStub", "TextToSpeechServicer", "add_TextToSpeechServicer_to_server"):
        assert hasattr(tts_pb2_grpc, name)
    for service in services:
        assert hasattr(stages_pb2_grpc, f"{service}Stub")


def test_params_have_explicit_presence():
    for message in (common_pb2.SamplingParams, common_pb2.SemanticParams, common_pb2.CoarseParams,
                    common_pb2.FineParams):
        for field in message.DESCRIPTOR.fields:
            if field.type != descriptor.FieldDescriptor.TYPE_MESSAGE:
                assert field.has_presence, f"{message.DESCRIPTOR.name}.{field.name} needs `optional`"
    # Real-valued sampling parameters are doubles: a Python 0.7 must arrive bit-exact, as Suno uses it.
    temperature = common_pb2.SamplingParams.DESCRIPTOR.fields_by_name["temperature"]
    assert temperature.type == descriptor.FieldDescriptor.TYPE_DOUBLE
    assert tts_pb2.SynthesizeRequest.DESCRIPTOR.fields_by_name["seed"].has_presence


def test_protos_compile_standalone_with_descriptor_set():
    """protoc accepts the files on their own (no Python-only options), as another language's build would."""
    from grpc_tools import protoc

    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    protos_root = V1_DIR.parent.parent
    with tempfile.TemporaryDirectory() as out:
        args = ["protoc", f"-I{protos_root}", f"-I{include}", "--include_imports",
                f"--descriptor_set_out={out}/set.pb", *(f"barkstream/v1/{p}" for p in PROTO_FILES)]
        assert protoc.main(args) == 0
        assert Path(out, "set.pb").stat().st_size > 0

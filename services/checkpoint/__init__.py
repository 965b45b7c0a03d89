"""Bark checkpoints: find, read, verify, convert, and write random ones.

    layout.py        file names, model prefixes, CheckpointError (no torch: the orchestrator imports it)
    hub.py           the checkpoint directory: a local path, or a Hugging Face hub snapshot (no torch)
    tensor_files.py  reading weight files safely: torch pickles, safetensors, shard indexes, JSON
    configs.py       model configs from config.json or Suno's model_args, and their checks
    gpt_names.py     GPT parameter names and shapes (ours = transformers', Suno's), verification
    codec_names.py   EnCodec parameter names and shapes (transformers', the encodec package's)
    load.py          load_checkpoint: a verified Checkpoint in barkstream's naming
    random_writer.py write a random checkpoint in the real snapshot layout (tests, benchmarks, demos)

This file imports nothing, so that importing hub.py stays torch-free.
"""

"""A fake sound card for tests and docs examples: `sounddevice` as PortAudio drives it, with no device.

Put this folder on PYTHONPATH and `import sounddevice` finds `sounddevice.py` here.
"""

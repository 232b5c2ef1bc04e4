"""Inference backends shipped with upscale: plugins found through the `upscaler.backends` entry point."""

"""Inference backends shipped with upscale, each a plugin found through the `upscaler.backends` entry point."""

"""upscale: super-resolve videos and folders of images with GAN generators."""

__version__ = "0.1.0"

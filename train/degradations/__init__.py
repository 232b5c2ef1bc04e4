"""Real-world degradations for training and for the degraded benchmark: blur kernels, resizing, noise,
JPEG, the second-order chain of Real-ESRGAN, and video codecs (a seeded bank of encoded crops)."""

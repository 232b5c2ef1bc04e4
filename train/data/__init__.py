"""Training data: the image files (`images`), the training patches and their sampler (`patches`)."""

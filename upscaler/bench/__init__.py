"""`upscale bench`: the machine's limits (`machine`), the model on every backend (`backends`), the video
job end to end (`pipeline`), their figures (`report`), and the bench that runs them (`run`)."""

"""Training the generators `upscale` runs: recipes, data, the loop, checkpoints, logs, DDP.

`upscale train` (upscaler/cli/train.py) is the way in. Modules: `config` (recipes and overrides),
`data` (HR folders, paired folders, validation sets), `loop` (`train()`), `checkpoint`, `logs`, `ema`,
`distributed`, and `losses`. This package uses upscaler's models, images, resampling and metrics, never
its backends or CLI.
"""

"""Measuring quality as the SR literature does: PSNR/SSIM (`metrics`), MATLAB bicubic (`resampling`),
benchmark sets (`evaluation`) and video against ground truth with tOF/tLP (`temporal`)."""

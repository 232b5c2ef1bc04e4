"""Measuring a model on a video with ground truth: per-frame PSNR and LPIPS, and TecoGAN's temporal
measures (Chu et al., "Learning temporal coherence via self-supervision for GAN-based video generation",
ACM TOG 2020), beside bicubic upscaling.

The clip is the ground truth: each frame is cropped to a multiple of the scale, downscaled with MATLAB
bicubic to 8 bits (as `upscale eval` makes LR from HR), and upscaled. Then, for each pair of consecutive
frames t-1, t:
- tOF: the mean absolute difference between the optical flow of the output pair and that of the ground
  truth pair (OpenCV's DIS flow on BT.601 luma, in pixels, both components averaged): motion the output
  shows that the truth does not, such as texture that crawls.
- tLP: |LPIPS(out[t-1], out[t]) - LPIPS(gt[t-1], gt[t])|: how much more (or less) consecutive outputs
  differ perceptually than the truth's frames do: flicker.
Lower is better for both. Frames are processed one at a time: memory does not grow with the clip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from upscaler.errors import InputError
from upscaler.quality.evaluation import Distance, EvalProgress, Upscale
from upscaler.quality.metrics import psnr, to_uint8
from upscaler.quality.resampling import bicubic_resize, mod_crop


def read_frames(path: Path, limit: int | None = None) -> Iterator[np.ndarray]:
    """The first `limit` frames (all when None) of the clip's first video stream, as 8-bit RGB."""
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise InputError(f"cannot read {path} as a video: {exc}") from None
    with container:
        if not container.streams.video:
            raise InputError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        count = 0
        try:
            for frame in container.decode(stream):
                if limit is not None and count >= limit:
                    return
                yield frame.to_ndarray(format="rgb24")
                count += 1
        except av.FFmpegError as exc:
            raise InputError(f"{path}: cannot decode frame {count + 1}: {exc}") from None


def optical_flow(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Dense flow (H x W x 2, pixels) from 8-bit RGB `first` to `second`: OpenCV's DIS on the luma."""
    import cv2

    lumas = [cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY) for image in (first, second)]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(lumas[0], lumas[1], None)


@dataclass
class _Track:
    """One output sequence (the model's or bicubic's) scored against the truth, a frame at a time."""

    psnr: list[float] = field(default_factory=list)
    lpips: list[float] = field(default_factory=list)
    tof: list[float] = field(default_factory=list)
    tlp: list[float] = field(default_factory=list)
    previous: np.ndarray | None = None

    def add(self, out8: np.ndarray, truth: _Truth, scale: int, perceptual: Distance | None) -> None:
        self.psnr.append(psnr(out8, truth.frame, scale))
        out = out8.astype(np.float32) / 255
        if perceptual is not None:
            self.lpips.append(perceptual(out, truth.levels))
        if self.previous is not None:
            self.tof.append(float(np.mean(np.abs(optical_flow(self.previous, out8) - truth.flow))))
            if perceptual is not None:
                change = perceptual(self.previous.astype(np.float32) / 255, out)
                self.tlp.append(abs(change - truth.change))
        self.previous = out8


@dataclass
class _Truth:
    frame: np.ndarray
    levels: np.ndarray
    flow: np.ndarray | None
    change: float | None


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


@dataclass(frozen=True)
class VideoReport:
    """Per-frame and temporal scores of a model (None where only bicubic was measured) and of bicubic."""

    frames: int
    size: tuple[int, int]  # HR width, height
    scale: int
    psnr: list[float] | None
    lpips: list[float] | None
    tof: float | None
    tlp: float | None
    bicubic_psnr: list[float]
    bicubic_lpips: list[float] | None
    bicubic_tof: float | None
    bicubic_tlp: float | None

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {"frames": self.frames, "size": list(self.size), "scale": self.scale}
        for prefix, scores in (
            ("", (self.psnr, self.lpips)),
            ("bicubic_", (self.bicubic_psnr, self.bicubic_lpips)),
        ):
            for name, values in zip(("psnr", "lpips"), scores, strict=True):
                document[f"{prefix}{name}"] = _mean(values) if values else None
                document[f"{prefix}{name}_per_frame"] = values
        document |= {
            "tof": self.tof,
            "tlp": self.tlp,
            "bicubic_tof": self.bicubic_tof,
            "bicubic_tlp": self.bicubic_tlp,
        }
        return document


def evaluate_clip(
    upscale: Upscale | None,
    frames: Iterator[np.ndarray],
    scale: int,
    perceptual: Distance | None = None,
    progress: Callable[[EvalProgress], None] | None = None,
    total: int | None = None,
) -> VideoReport:
    """Score `upscale` (None: bicubic alone) on ground-truth `frames` (8-bit RGB) at x`scale`."""
    notify = progress or (lambda event: None)
    model, bicubic = _Track(), _Track()
    previous_truth: np.ndarray | None = None
    count, size = 0, (0, 0)
    for frame in frames:
        notify(EvalProgress(done=count, total=total or count + 1, name=f"frame {count + 1}"))
        hr = mod_crop(frame, scale)
        height, width = hr.shape[:2]
        if height < 2 * scale or width < 2 * scale:
            raise InputError(
                f"the clip's frames ({frame.shape[1]} x {frame.shape[0]}) are too small for x{scale}"
            )
        size = (width, height)
        lr8 = bicubic_resize(hr, width // scale, height // scale)
        lr = lr8.astype(np.float32) / 255
        levels = hr.astype(np.float32) / 255
        truth = _Truth(hr, levels, None, None)
        if previous_truth is not None:
            truth.flow = optical_flow(previous_truth, hr)
            if perceptual is not None:
                truth.change = perceptual(previous_truth.astype(np.float32) / 255, levels)
        if upscale is not None:
            out = to_uint8(upscale(lr))
            if out.shape != hr.shape:
                made = f"{out.shape[1]} x {out.shape[0]}"
                raise InputError(f"the model made {made} of a {width // scale} x {height // scale} frame")
            model.add(out, truth, scale, perceptual)
        bicubic.add(to_uint8(bicubic_resize(lr, width, height)), truth, scale, perceptual)
        previous_truth = hr
        count += 1
    if count == 0:
        raise InputError("the clip has no frames to measure")
    notify(EvalProgress(done=count, total=count, name=None))
    measured = upscale is not None
    return VideoReport(
        frames=count,
        size=size,
        scale=scale,
        psnr=model.psnr if measured else None,
        lpips=model.lpips if measured and perceptual is not None else None,
        tof=_mean(model.tof) if measured else None,
        tlp=_mean(model.tlp) if measured else None,
        bicubic_psnr=bicubic.psnr,
        bicubic_lpips=bicubic.lpips if perceptual is not None else None,
        bicubic_tof=_mean(bicubic.tof),
        bicubic_tlp=_mean(bicubic.tlp),
    )

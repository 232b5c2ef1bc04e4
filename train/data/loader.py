"""The training data a run reads: its images checked and decoded, the samples, the codec bank, and the
DataLoader that batches them across worker processes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from train.data.images import ImageSet, cache_bytes, scan_training_images
from train.data.patches import IterationSampler, PatchDataset
from train.degradations.bank import CodecBank
from train.recipes.schema import Recipe


def training_loader(
    recipe: Recipe,
    start: int,
    rank: int,
    world_size: int,
    device: torch.device,
    report: Callable[[str], None],
) -> tuple[ImageSet, DataLoader, IterationSampler]:
    """(the checked images, batches from iteration `start` on for process `rank` of `world_size`, their
    sampler). Says on `report` what was skipped, what is cached and where the codec bank came from."""
    data_cfg, scale = recipe.data, recipe.scale
    images = scan_training_images(
        [Path(folder) for folder in data_cfg.hr],
        Path(data_cfg.lq) if data_cfg.lq else None,
        Path(data_cfg.gt) if data_cfg.gt else None,
        scale,
        data_cfg.patch_size,
    )
    if images.skipped:
        report(
            f"Skipping {len(images.skipped)} images smaller than the {data_cfg.patch_size}-pixel crop: "
            + ", ".join(images.skipped[:8])
            + (f" and {len(images.skipped) - 8} more" if len(images.skipped) > 8 else "")
        )
    needed = cache_bytes(images, scale)
    cache = needed <= data_cfg.cache_gib * 1024**3
    report(
        f"{images.files} training images; "
        + (
            f"decoded once and kept in memory ({needed / 1024**2:.0f} MiB)."
            if cache
            else f"decoded at each use ({needed / 1024**3:.1f} GiB would exceed data.cache_gib)."
        )
    )
    dataset = PatchDataset(
        images,
        scale,
        data_cfg.patch_size,
        recipe.train.seed,
        data_cfg.flip,
        data_cfg.rotate,
        cache=cache,
        degradation=recipe.degradation,
    )
    if recipe.degradation is not None and recipe.degradation.codec_prob > 0:
        dataset.bank = codec_bank(dataset, images, recipe, report)
    # Samples do not depend on which process makes them, so fewer workers than asked changes nothing
    # but the speed; more processes than CPUs only fight over them.
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(data_cfg.workers, cpus)
    if workers < data_cfg.workers:
        report(
            f"data.workers is {data_cfg.workers}, but this process may use {workers} CPUs: using {workers}."
        )
    sampler = IterationSampler(start, data_cfg.batch_size, rank, world_size)
    loader = DataLoader(
        dataset,
        batch_size=data_cfg.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    return images, loader, sampler


def codec_bank(dataset: PatchDataset, images: ImageSet, recipe, report: Callable[[str], None]) -> CodecBank:
    """The recipe's codec bank for these images: from the cache when an earlier run made the same one."""
    from train.degradations.bank import bank_key, bank_side, build_bank, cached_bank
    from upscaler.system.places import cache_dir

    config, scale = recipe.degradation, recipe.scale
    side = bank_side(recipe.data.patch_size, scale)
    key = bank_key(config, images.digest, scale, side, recipe.train.seed)
    sizes = [(entry.width, entry.height) for entry in images.entries]
    started = time.monotonic()
    bank, made = cached_bank(
        cache_dir() / "codec-banks",
        key,
        lambda: build_bank(sizes, dataset.hr_pixels, scale, side, config, recipe.train.seed),
    )
    what = f"made in {time.monotonic() - started:.0f} s" if made else "read from the cache"
    report(
        f"Codec bank: {len(bank)} degraded {side} x {side} frames ({config.bank_runs} runs of "
        f"{config.bank_frames}, {', '.join(config.codecs)}), {what}; "
        f"{config.codec_prob:.0%} of the samples are drawn from it."
    )
    return bank

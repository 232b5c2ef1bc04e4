"""The training loop, readable top to bottom: set up, then one iteration after another.

`train(recipe, run_dir)` does everything a recipe says: it checks what can be checked before any data is
touched (VGG weights, the pretrained generator, the checkpoint to resume from), reads the data, builds
G (net_g) and, for GAN recipes, D (net_d), and runs the iterations: a generator step on the recipe's
losses, a discriminator step, the EMA, the learning-rate schedule. Every `log_every` iterations it logs,
every `val_every` it validates, every `checkpoint_every` it writes a checkpoint. At the end it writes
the generator (the EMA when there is one) as `<recipe>.safetensors` and its model card `<recipe>.json`.

Run directory:
    config.toml        the resolved configuration (what --resume continues)
    train.csv, val.csv logged losses and learning rate; validation PSNR/SSIM
    samples.png        bicubic | SR | HR for a few validation images, from the last validation
    curves.png         losses and validation PSNR against the iteration
    tensorboard/       when the tensorboard package is installed
    checkpoints/       iter_<N>.pt, the newest `keep_checkpoints`
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from train import distributed
from train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from train.config import to_toml
from train.data import IterationSampler, PatchDataset, cache_bytes, load_validation, scan_training_images
from train.ema import EMA
from train.logs import CsvLog, TensorBoardLog, curves_image, sample_grid, write_png
from train.schema import ConfigError, Recipe, SchedulerConfig
from upscaler.errors import InputError, ModelError, OutputError
from upscaler.files import write_bytes_atomically
from upscaler.metrics import psnr, ssim, to_uint8
from upscaler.models import build_model, find_model, get_architecture, read_weights, save_weights
from upscaler.values import SizeRequirement

# How many validation images samples.png shows.
SAMPLE_IMAGES = 4
# How train() shows its progress (see its docstring).
PROGRESS = ("bar", "lines", "none")


@dataclass(frozen=True)
class RunResult:
    """How a run ended. `weights`/`card` are None when it was interrupted or on a rank other than 0."""

    run_dir: Path
    iteration: int
    interrupted: bool
    checkpoint: Path | None
    weights: Path | None
    card: Path | None
    psnr: float | None
    ssim: float | None


def train(
    recipe: Recipe,
    run_dir: Path,
    *,
    resume: bool = False,
    vgg: nn.Module | None = None,
    report: Callable[[str], None] = lambda line: None,
    progress: str = "none",
    command: str = "",
) -> RunResult:
    """Run `recipe` in `run_dir` (continue its newest checkpoint when `resume`).

    vgg: the perceptual loss's feature network; None loads ImageNet VGG19 from `losses.vgg_weights`
    or the torch hub cache (tests pass a random one explicitly). report: one line of news at a time
    (skipped files, where things were written). progress: "bar", a tqdm bar on stderr (for a terminal);
    "lines", a line to `report` every `train.log_every` iterations with the losses, speed and ETA (for a
    log file, where a bar's carriage returns pile up); "none". command: the command line that started
    this run (or resumed it); the model card lists every one, the first as its `command`.
    """
    if progress not in PROGRESS:
        raise ValueError(f"train: progress must be one of {', '.join(PROGRESS)} (got {progress!r})")
    run_dir = Path(run_dir)
    cfg, losses_cfg = recipe.train, recipe.losses
    place = distributed.from_environment()
    device = distributed.device_for(place, cfg.device)
    distributed.start(place, device)
    if not place.is_main:
        report = lambda line: None  # noqa: E731 - one voice for the console, rank 0's
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.precision: fp16 needs a CUDA device (training on {device.type})")
    architecture = get_architecture(recipe.model.arch)
    scale = recipe.scale

    # --- what can fail without touching the data: VGG, pretrained weights, the checkpoint ------------
    if losses_cfg.uses_vgg and vgg is None:
        from upscaler.models.vgg import find_vgg_weights, load_vgg19_features

        explicit = Path(losses_cfg.vgg_weights) if losses_cfg.vgg_weights else None
        vgg_path = find_vgg_weights(explicit)
        vgg = load_vgg19_features(
            vgg_path, losses_cfg.perceptual_layer, losses_cfg.perceptual_before_activation
        )
    if losses_cfg.uses_gan:
        with torch.device("meta"):  # a crop size the discriminator cannot take fails here, costing nothing
            _build_discriminator(recipe)
    for key, flag, folder in (
        *(("data.hr", "--data", folder) for folder in recipe.data.hr),
        ("data.lq", "--lq", recipe.data.lq),
        ("data.gt", "--gt", recipe.data.gt),
        ("data.val", "--val", recipe.data.val),
    ):
        if folder and not Path(folder).is_dir():
            what = "not a folder" if Path(folder).exists() else "no such folder"
            raise InputError(f"{key} ({flag}): {what}: {folder}")
    checkpoint: dict[str, Any] | None = None
    pretrained: dict[str, torch.Tensor] | None = None
    if not resume and list_checkpoints(run_dir):
        raise OutputError(
            f"{run_dir} already holds a run (checkpoints/)",
            hint="pass --resume to continue it, or another --out for a new run",
        )
    if resume:
        found = latest_checkpoint(run_dir)
        if found is None:
            raise InputError(
                f"--resume: no checkpoint in {run_dir / 'checkpoints'}", hint="start without --resume"
            )
        checkpoint = load_checkpoint(found)
        if checkpoint["model"] != {"arch": recipe.model.arch, "config": recipe.model.config}:
            raise ConfigError(
                f"--resume: {found.name} holds a {checkpoint['model']['arch']} generator with config "
                f"{checkpoint['model']['config']}, but the configuration asks for {recipe.model.arch} "
                f"with {recipe.model.config}"
            )
        if checkpoint["iteration"] > cfg.iterations:
            raise ConfigError(
                f"train.iterations: {cfg.iterations} is fewer than the {checkpoint['iteration']} "
                f"iterations {found.name} has done",
                hint=f"pass --iterations N with N >= {checkpoint['iteration']} to continue or extend the run",
            )
        report(f"Resuming {run_dir} from iteration {checkpoint['iteration']} ({found.name}).")
    elif cfg.pretrained:
        path = _pretrained_path(cfg.pretrained)
        if not path.is_file():
            raise InputError(
                f"train.pretrained: no such weights file: {path}",
                hint=f"train the recipe this one starts from first, or pass --pretrained FILE or a bundled "
                f"model id (--pretrained '' starts {recipe.name} from random weights)",
            )
        pretrained, metadata = read_weights(path)
        _check_pretrained_config(recipe, metadata, cfg.pretrained)
        with torch.device("meta"):  # does it fit? known before the data is read, at no cost
            _load_pretrained(
                build_model(recipe.model.arch, recipe.model.config), dict(pretrained), path, False
            )
    if place.is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.toml").write_text(to_toml(recipe.to_dict()) + "\n", encoding="utf-8")
        except OSError as exc:
            what = "it is a file" if run_dir.is_file() else exc.strerror or str(exc)
            raise OutputError(f"cannot make the run folder {run_dir} (--out): {what}") from None
    report(f"Training {recipe.name}: {recipe.summary}.")

    schedule = recipe.scheduler
    if schedule.kind == "cosine" and schedule.period != cfg.iterations:
        # --iterations does not move the period: say what the schedule will do instead
        lr, low = recipe.optim_g.lr, schedule.eta_min
        end = low + (lr - low) * (1 + math.cos(math.pi * cfg.iterations / schedule.period)) / 2
        what = (
            f"ends at {end:.3g}, not at eta_min {low:.3g}"
            if cfg.iterations < schedule.period
            else f"climbs back up after iteration {schedule.period}"
        )
        report(
            f"Note: scheduler.period is {schedule.period} iterations but the run has {cfg.iterations}: "
            f"the learning rate {what}; --set scheduler.period={cfg.iterations} anneals over the whole run."
        )

    # --- data: validation first, it is small and fails fast ------------------------------------------
    data_cfg = recipe.data
    validation = []
    if data_cfg.val and place.is_main:
        validation = load_validation(Path(data_cfg.val), scale)
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
        images, scale, data_cfg.patch_size, cfg.seed, data_cfg.flip, data_cfg.rotate, cache=cache
    )
    # Samples do not depend on which process makes them, so fewer workers than asked changes nothing
    # but the speed; more processes than CPUs only fight over them.
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(data_cfg.workers, cpus)
    if workers < data_cfg.workers:
        report(
            f"data.workers is {data_cfg.workers}, but this process may use {workers} CPUs: using {workers}."
        )
    start = checkpoint["iteration"] if checkpoint else 0
    sampler = IterationSampler(start, data_cfg.batch_size, place.rank, place.world_size)
    loader = DataLoader(
        dataset,
        batch_size=data_cfg.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )

    # --- networks, optimisers, schedules ------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    net_g = build_model(recipe.model.arch, recipe.model.config)
    if pretrained is not None:
        _load_pretrained(net_g, pretrained, cfg.pretrained)
    # channels_last convolutions measured 5-20% faster per training step on these CPUs (bf16 and fp32);
    # on CUDA they are what the tensor cores want under autocast
    layout = (
        torch.channels_last
        if device.type == "cpu" or cfg.precision in ("bf16", "fp16")
        else torch.contiguous_format
    )
    net_g.to(device, memory_format=layout).train()
    net_d = (
        _build_discriminator(recipe).to(device, memory_format=layout).train() if losses_cfg.uses_gan else None
    )
    ema = EMA(net_g, cfg.ema_decay) if cfg.ema_decay > 0 else None

    optim_g = _adam(net_g, recipe.optim_g)
    sched_g = _scheduler(optim_g, recipe.scheduler)
    optim_d = _adam(net_d, recipe.optim_d) if net_d is not None else None
    sched_d = _scheduler(optim_d, recipe.scheduler) if optim_d is not None else None
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)

    from train.losses import GANLoss, PerceptualLoss, PixelLoss

    pixel_loss = PixelLoss(losses_cfg.pixel)
    perceptual_loss = (
        PerceptualLoss(vgg.to(device), losses_cfg.perceptual_criterion, losses_cfg.perceptual_feature_scale)
        if losses_cfg.uses_vgg
        else None
    )
    gan_loss = GANLoss(losses_cfg.gan) if losses_cfg.uses_gan else None

    history: dict[str, Any] = {"losses": {}, "psnr": [], "ssim": []}
    wall_time = 0.0
    # the command that started the run, then each that resumed it
    commands = (_earlier_commands(checkpoint, run_dir / f"{recipe.name}.json") if checkpoint else []) + (
        [command] if command else []
    )
    if checkpoint is not None:
        net_g.load_state_dict(checkpoint["net_g"])
        optim_g.load_state_dict(checkpoint["optim_g"])
        sched_g.load_state_dict(checkpoint["sched_g"])
        if net_d is not None:
            if checkpoint["net_d"] is None:
                raise ConfigError("--resume: the checkpoint has no discriminator; losses.gan_weight was 0")
            net_d.load_state_dict(checkpoint["net_d"])
            optim_d.load_state_dict(checkpoint["optim_d"])
            sched_d.load_state_dict(checkpoint["sched_d"])
        if ema is not None:
            # a run that turns the EMA on at resume starts it from the generator
            ema.net.load_state_dict(checkpoint["net_g_ema"] or checkpoint["net_g"])
        scaler.load_state_dict(checkpoint["scaler"])
        set_rng_state(checkpoint["rng"])
        history = checkpoint["history"]
        wall_time = checkpoint["wall_time"]
    net_g = distributed.wrap(net_g, place, device)
    if net_d is not None:
        net_d = distributed.wrap(net_d, place, device)

    def state(iteration: int) -> dict[str, Any]:
        return {
            "iteration": iteration,
            "model": {"arch": recipe.model.arch, "config": recipe.model.config},
            "net_g": distributed.unwrap(net_g).state_dict(),
            "optim_g": optim_g.state_dict(),
            "sched_g": sched_g.state_dict(),
            "net_d": distributed.unwrap(net_d).state_dict() if net_d is not None else None,
            "optim_d": optim_d.state_dict() if optim_d is not None else None,
            "sched_d": sched_d.state_dict() if sched_d is not None else None,
            "net_g_ema": ema.net.state_dict() if ema is not None else None,
            "scaler": scaler.state_dict(),
            "rng": rng_state(),
            # the sampler's whole state: sample k of the run is a function of (seed, k) alone
            "sampler": {
                "seed": cfg.seed,
                "start": iteration,
                "batch_size": sampler.batch_size,
                "world_size": sampler.world_size,
            },
            "history": history,
            "wall_time": wall_time + time.monotonic() - started,
            "commands": commands,
        }

    # --- logs ---------------------------------------------------------------------------------------
    loss_names = [
        name
        for name, used in (
            ("pixel", losses_cfg.pixel_weight > 0),
            ("perceptual", losses_cfg.uses_vgg),
            ("gan", losses_cfg.uses_gan),
            ("d", losses_cfg.uses_gan),
            ("d_real", losses_cfg.uses_gan),
            ("d_fake", losses_cfg.uses_gan),
        )
        if used
    ]
    if place.is_main:
        train_csv = CsvLog(
            run_dir / "train.csv", [*loss_names, "lr", "s_per_it"], resume_at=start if resume else None
        )
        val_csv = CsvLog(run_dir / "val.csv", ["psnr", "ssim"], resume_at=start if resume else None)
        board = TensorBoardLog(run_dir / "tensorboard", purge_step=start + 1 if resume else None)
    bicubic_scores = _bicubic_scores(validation, scale)
    requirement = architecture.requirement(recipe.model.config)

    def validate(iteration: int) -> tuple[float, float]:
        network = ema.net if ema is not None else distributed.unwrap(net_g)
        scores, triples = _validate(network, validation, scale, device, requirement)
        network.train(ema is None)
        history["psnr"].append((iteration, scores[0]))
        history["ssim"].append((iteration, scores[1]))
        val_csv.write(iteration, {"psnr": scores[0], "ssim": scores[1]})
        board.write(iteration, {"psnr": scores[0], "ssim": scores[1]}, "val")
        write_png(run_dir / "samples.png", sample_grid(triples[:SAMPLE_IMAGES]))
        return scores

    # --- Ctrl-C: finish the iteration under way, then save and stop ---------------------------------
    stop_requested = threading.Event()
    previous_handler = None
    if threading.current_thread() is threading.main_thread():

        def on_interrupt(signum, frame):
            if stop_requested.is_set():  # a second Ctrl-C stops at once
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            stop_requested.set()

        previous_handler = signal.signal(signal.SIGINT, on_interrupt)

    # --- the iterations -----------------------------------------------------------------------------
    started = time.monotonic()
    batches = iter(loader)
    running: dict[str, list[float]] = {name: [] for name in loss_names}
    # time in training steps since the last log: data included, validation and checkpoints not
    step_seconds, steps = 0.0, 0
    bar = tqdm(
        total=cfg.iterations,
        initial=start,
        disable=not (progress == "bar" and place.is_main),
        dynamic_ncols=True,
        file=sys.stderr,
        desc=recipe.name,
    )
    iteration, interrupted, saved, last_scores = start, False, None, None
    # for "lines": the speed over the last log_every iterations, everything included (validation too)
    line_clock, line_iteration = time.monotonic(), start
    if resume and validation and history["psnr"] and history["psnr"][-1][0] == start:
        # a finished run resumed without more iterations: its last validation stands (not measured twice)
        last_scores = (history["psnr"][-1][1], history["ssim"][-1][1])
    try:
        while iteration < cfg.iterations:
            if distributed.any_rank(place, stop_requested.is_set(), device):
                interrupted = True
                break
            step_started = time.monotonic()
            try:
                lq, gt = next(batches)
            except InputError as exc:
                # a file whose header read at start but whose pixels do not (decoded at each use);
                # from a worker process the message carries the worker's traceback: keep its last line
                lines = exc.message.strip().splitlines()
                message = lines[-1].split("Error: ", 1)[-1] if len(lines) > 1 else exc.message
                hint = "replace or remove the file"
                if place.is_main and not place.enabled and iteration > start:
                    saved = save_checkpoint(run_dir, iteration, state(iteration), cfg.keep_checkpoints)
                    hint += f", then continue with --resume (checkpoint {saved.name})"
                raise InputError(f"training data: {message}", hint=hint) from None
            except RuntimeError:
                # DataLoader workers get the Ctrl-C too and may be gone: that is the interrupt
                if stop_requested.is_set():
                    interrupted = True
                    break
                raise
            lq = lq.to(device, non_blocking=True).contiguous(memory_format=layout)
            gt = gt.to(device, non_blocking=True).contiguous(memory_format=layout)
            iteration += 1
            values: dict[str, torch.Tensor] = {}

            # generator step: D is frozen, and called without its DDP wrapper (nothing of it to sync)
            if net_d is not None:
                distributed.unwrap(net_d).requires_grad_(False)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                sr = net_g(lq)
                if losses_cfg.pixel_weight > 0:
                    values["pixel"] = losses_cfg.pixel_weight * pixel_loss(sr, gt)
                if perceptual_loss is not None:
                    values["perceptual"] = losses_cfg.perceptual_weight * perceptual_loss(sr, gt)
                if gan_loss is not None:
                    plain_d = distributed.unwrap(net_d)
                    with torch.no_grad():  # constants to the generator (RaGAN compares with them)
                        real_logits = plain_d(gt)
                    values["gan"] = losses_cfg.gan_weight * gan_loss.generator(real_logits, plain_d(sr))
                loss_g = sum(values.values())
            optim_g.zero_grad(set_to_none=True)
            scaler.scale(loss_g).backward()
            scaler.step(optim_g)

            # discriminator step, on the detached SR batch
            if net_d is not None:
                distributed.unwrap(net_d).requires_grad_(True)
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    real_logits = net_d(gt)
                    fake_logits = net_d(sr.detach())
                    loss_d = gan_loss.discriminator(real_logits, fake_logits)
                optim_d.zero_grad(set_to_none=True)
                scaler.scale(loss_d).backward()
                scaler.step(optim_d)
                values["d"] = loss_d
                values["d_real"] = real_logits.detach().float().mean()
                values["d_fake"] = fake_logits.detach().float().mean()

            scaler.update()
            sched_g.step()
            if sched_d is not None:
                sched_d.step()
            if ema is not None:
                ema.update(distributed.unwrap(net_g), iteration)

            for name, value in values.items():
                running[name].append(float(value.detach()))
            step_seconds, steps = step_seconds + time.monotonic() - step_started, steps + 1
            bar.update(1)
            if iteration % cfg.log_every == 0 and place.is_main:
                means = {name: float(np.mean(items)) for name, items in running.items() if items}
                running = {name: [] for name in loss_names}
                seconds, step_seconds, steps = step_seconds / steps, 0.0, 0
                for name, value in means.items():
                    history["losses"].setdefault(name, []).append((iteration, value))
                lr = optim_g.param_groups[0]["lr"]
                train_csv.write(iteration, {**means, "lr": lr, "s_per_it": seconds})
                board.write(iteration, {**means, "lr": lr, "s_per_it": seconds}, "train")
                bar.set_postfix({name: f"{value:.4g}" for name, value in means.items()} | {"lr": f"{lr:.2g}"})
                if progress == "lines":
                    now = time.monotonic()
                    rate = (iteration - line_iteration) / max(now - line_clock, 1e-9)
                    line_clock, line_iteration = now, iteration
                    report(_progress_line(iteration, cfg.iterations, means, lr, rate))
            if iteration % cfg.val_every == 0 and validation:
                last_scores = validate(iteration)
                report(
                    f"iteration {iteration}: PSNR {last_scores[0]:.2f} dB, SSIM {last_scores[1]:.4f} "
                    f"(bicubic {bicubic_scores[0]:.2f} dB)"
                )
            plot_due = iteration % cfg.val_every == 0 or iteration == cfg.iterations
            if place.is_main and plot_due and (history["losses"] or history["psnr"]):
                curves = curves_image(history["losses"], history["psnr"], bicubic_scores[0])
                write_png(run_dir / "curves.png", curves)
            if iteration % cfg.checkpoint_every == 0 and place.is_main:
                saved = save_checkpoint(run_dir, iteration, state(iteration), cfg.keep_checkpoints)
    finally:
        bar.close()
        del batches  # stops the DataLoader's workers
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)

    # --- the end: a checkpoint to continue from; the model and its card when the run is complete -----
    weights = card = None
    if place.is_main:
        if not interrupted and validation and (last_scores is None or iteration % cfg.val_every):
            last_scores = validate(iteration)
            write_png(
                run_dir / "curves.png", curves_image(history["losses"], history["psnr"], bicubic_scores[0])
            )
        if saved is None or not saved.name.endswith(f"{iteration:08d}.pt"):
            saved = save_checkpoint(run_dir, iteration, state(iteration), cfg.keep_checkpoints)
        if not interrupted:
            network = ema.net if ema is not None else distributed.unwrap(net_g)
            weights = save_weights(
                network, run_dir / f"{recipe.name}.safetensors", recipe.model.arch, recipe.model.config
            )
            card = _write_card(
                run_dir / f"{recipe.name}.json",
                recipe=recipe,
                weights=weights,
                iteration=iteration,
                wall_time=wall_time + time.monotonic() - started,
                images=images,
                scores=last_scores,
                bicubic=bicubic_scores if validation else None,
                validation_set=data_cfg.val,
                commands=commands,
                device=device,
                world_size=place.world_size,
                ema=ema is not None,
            )
        board.close()
    distributed.barrier(place)
    distributed.stop(place)
    return RunResult(
        run_dir=run_dir,
        iteration=iteration,
        interrupted=interrupted,
        checkpoint=saved,
        weights=weights,
        card=card,
        psnr=last_scores[0] if last_scores else None,
        ssim=last_scores[1] if last_scores else None,
    )


# --------------------------------------------------------------------------------------------- helpers


def _pretrained_path(spec: str) -> Path:
    """A bundled model id (`rrdb-psnr`) means its shipped weights; anything else is a file."""
    entry = find_model(spec)
    return entry.weights if entry is not None and entry.weights_present else Path(spec).expanduser()


def _check_pretrained_config(recipe: Recipe, metadata: dict[str, str], source: str) -> None:
    """Weights of our own format say their config: name the --set flags that make the recipe fit them."""
    if metadata.get("arch") != recipe.model.arch or "config" not in metadata:
        return
    theirs = json.loads(metadata["config"])
    differing = {key: value for key, value in theirs.items() if recipe.model.config.get(key) != value}
    if differing:
        shown = ", ".join(f"{key} {value}" for key, value in differing.items())
        flags = " ".join(f"--set model.config.{key}={json.dumps(value)}" for key, value in differing.items())
        raise ConfigError(
            f"train.pretrained: {source} is a {recipe.model.arch} with {shown}; the recipe's generator "
            "differs, and a GAN stage keeps the shape of the generator it starts from",
            hint=f"add {flags}",
        )


def _load_pretrained(net: nn.Module, state: dict[str, torch.Tensor], source: str, load: bool = True) -> None:
    """Load `state` into `net`; a ModelError saying what does not fit. `load` False only checks."""
    expected = net.state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong = [key for key in expected if key in state and state[key].shape != expected[key].shape]
    if missing or unexpected or wrong:
        what = (
            f"wrong shapes: {', '.join(wrong[:3])}"
            if wrong
            else f"missing: {', '.join(missing[:3])}"
            if missing
            else f"unexpected: {', '.join(unexpected[:3])}"
        )
        raise ModelError(
            f"train.pretrained: {source} does not fit the recipe's generator ({what})",
            hint="start from weights of the same architecture and config (an SRResNet with batch norm "
            "for srgan: the srresnet recipe's result)",
        )
    if load:
        net.load_state_dict(state)


def _build_discriminator(recipe: Recipe) -> nn.Module:
    from upscaler.models.discriminators import SRGANDiscriminator, VGGStyleDiscriminator

    spec = recipe.discriminator
    in_channels = int(recipe.model.config.get("num_out_ch", 3))
    try:
        if spec.arch == "srgan":
            return SRGANDiscriminator(in_channels, spec.num_feat, input_size=recipe.data.patch_size)
        return VGGStyleDiscriminator(in_channels, spec.num_feat, input_size=recipe.data.patch_size)
    except (ValueError, ModelError) as exc:
        raise ConfigError(f"discriminator: {exc}") from None


def _adam(net: nn.Module, spec) -> torch.optim.Adam:
    return torch.optim.Adam(
        [p for p in net.parameters() if p.requires_grad],
        lr=spec.lr,
        betas=tuple(spec.betas),
        weight_decay=spec.weight_decay,
    )


def _scheduler(
    optimizer: torch.optim.Optimizer, spec: SchedulerConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per iteration: milestones and periods count iterations."""
    if spec.kind == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(spec.milestones), spec.gamma)
    if spec.kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, spec.period, spec.eta_min)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, [], 1.0)  # constant


@torch.no_grad()
def _upscale(
    network: nn.Module, lq: np.ndarray, scale: int, device: torch.device, requirement: SizeRequirement
) -> np.ndarray:
    """SR of an H x W x 3 image; padded at the bottom and right to a size the network takes, as the
    inference pipeline pads (`upscaler.tiling`), and the padding's output cropped off."""
    height, width = lq.shape[:2]
    image = lq.transpose(2, 0, 1)
    for axis, size in ((1, height), (2, width)):
        pad = requirement.padded(size) - size
        if pad:
            widths = [(0, 0)] * 3
            widths[axis] = (0, pad)
            image = np.pad(image, widths, mode="reflect" if pad < size else "symmetric")
    tensor = torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(0).to(device)
    sr = network(tensor)[:, :, : height * scale, : width * scale].clamp_(0, 1)
    return sr[0].float().cpu().numpy().transpose(1, 2, 0)


def _validate(network: nn.Module, images, scale: int, device: torch.device, requirement: SizeRequirement):
    """Mean PSNR and SSIM (Y, border = scale, SR rounded to 8 bits first) and bicubic/SR/HR triples."""
    network.eval()
    psnrs, ssims, triples = [], [], []
    for image in images:
        sr = _upscale(network, image.lq, scale, device, requirement)
        sr8, hr8 = to_uint8(sr), to_uint8(image.hr)
        psnrs.append(psnr(sr8, hr8, border=scale))
        ssims.append(ssim(sr8, hr8, border=scale))
        triples.append((image.bicubic, sr, image.hr))
    return (float(np.mean(psnrs)), float(np.mean(ssims))), triples


def _bicubic_scores(images, scale: int) -> tuple[float, float]:
    if not images:
        return (float("nan"), float("nan"))
    pairs = [(to_uint8(image.bicubic), to_uint8(image.hr)) for image in images]
    return (
        float(np.mean([psnr(a, b, border=scale) for a, b in pairs])),
        float(np.mean([ssim(a, b, border=scale) for a, b in pairs])),
    )


def _write_card(
    path: Path,
    *,
    recipe: Recipe,
    weights: Path,
    iteration: int,
    wall_time: float,
    images,
    scores: tuple[float, float] | None,
    bicubic: tuple[float, float] | None,
    validation_set: str,
    commands: list[str],
    device: torch.device,
    world_size: int,
    ema: bool,
) -> Path:
    """The model card: what the weights are, how they were trained, and how well they do."""
    card = {
        "weights": weights.name,
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "arch": recipe.model.arch,
        "config": recipe.model.config,
        "scale": recipe.scale,
        "recipe": recipe.name,
        "description": recipe.summary,  # from the resolved config: --set may have changed the recipe
        "generator": "EMA of the generator" if ema else "the generator",
        "iterations": iteration,
        "wall_time_s": round(wall_time, 1),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": commands[0] if commands else "",  # the command that started the run
        "commands": commands,  # that one, then each --resume
        "device": str(device),
        "processes": world_size,
        "torch": torch.__version__,
        "data": {
            "hr": list(recipe.data.hr),
            "lq": recipe.data.lq,
            "gt": recipe.data.gt,
            "images": images.files,
            "skipped": len(images.skipped),
            "digest_sha256": images.digest,
        },
        "validation": None
        if scores is None
        else {
            "set": validation_set,
            # an infinite PSNR (identical images: bicubic at x1) is null, as in `upscale eval --json`
            "psnr_y": _rounded(scores[0], 4),
            "ssim_y": _rounded(scores[1], 5),
            "bicubic_psnr_y": _rounded(bicubic[0], 4),
            "bicubic_ssim_y": _rounded(bicubic[1], 5),
            "definition": f"Y of BT.601, {recipe.scale}-pixel border cropped, SR rounded to 8 bits (BasicSR)",
        },
        "training_config": recipe.to_dict(),
    }
    write_bytes_atomically(path, (json.dumps(card, indent=2, allow_nan=False) + "\n").encode())
    return path


def _progress_line(iteration: int, iterations: int, means: dict[str, float], lr: float, rate: float) -> str:
    """`iteration 200/1000: pixel 0.0213, lr 0.0002; 3.41 it/s, ETA 0:03:54` (a line for a log file)."""
    losses = ", ".join(f"{name} {value:.4g}" for name, value in means.items())
    eta = int(round((iterations - iteration) / rate)) if rate > 0 else None
    when = "?" if eta is None else f"{eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}"
    return f"iteration {iteration}/{iterations}: {losses}, lr {lr:.3g}; {rate:.3g} it/s, ETA {when}"


def _earlier_commands(checkpoint: dict[str, Any], card: Path) -> list[str]:
    """The commands of the run so far: from the checkpoint, or, for one written before checkpoints
    kept them, from the card of a finished earlier part (empty when there is neither)."""
    if "commands" in checkpoint:
        return list(checkpoint["commands"])
    try:
        written = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if isinstance(written.get("commands"), list):
        return [str(item) for item in written["commands"]]
    return [written["command"]] if isinstance(written.get("command"), str) and written["command"] else []


def _rounded(value: float, digits: int) -> float | None:
    return round(value, digits) if math.isfinite(value) else None

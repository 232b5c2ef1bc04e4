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

import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from train import distributed
from train.data.loader import training_loader
from train.data.validation import load_validation
from train.ema import EMA
from train.losses import GANLoss, PerceptualLoss, PixelLoss
from train.networks import (
    adam,
    build_discriminator,
    load_pretrained,
    scheduler,
)
from train.recipes.config import to_toml
from train.recipes.schema import ConfigError, Recipe
from train.records.card import earlier_commands, progress_line, write_card
from train.records.checkpoint import (
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from train.records.logs import CsvLog, TensorBoardLog, curves_image, sample_grid, write_png
from train.start import preflight, schedule_note
from train.steps import MixedPrecision, Objective, discriminator_step, generator_step
from train.validation import SAMPLE_IMAGES, measure_bicubic, validate_images
from upscaler.errors import InputError, OutputError
from upscaler.models import build_model, get_architecture, save_weights

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
    vgg, checkpoint, pretrained = preflight(recipe, run_dir, resume, vgg, report)
    if place.is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.toml").write_text(to_toml(recipe.to_dict()) + "\n", encoding="utf-8")
        except OSError as exc:
            what = "it is a file" if run_dir.is_file() else exc.strerror or str(exc)
            raise OutputError(f"cannot make the run folder {run_dir} (--out): {what}") from None
    report(f"Training {recipe.name}: {recipe.summary}.")

    note = schedule_note(recipe)
    if note:
        report(note)

    # --- data: validation first, it is small and fails fast ------------------------------------------
    data_cfg = recipe.data
    validation = []
    if data_cfg.val and place.is_main:
        validation = load_validation(Path(data_cfg.val), scale)
    start = checkpoint["iteration"] if checkpoint else 0
    images, loader, sampler = training_loader(recipe, start, place.rank, place.world_size, device, report)

    # --- networks, optimisers, schedules ------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    net_g = build_model(recipe.model.arch, recipe.model.config)
    if pretrained is not None:
        load_pretrained(net_g, pretrained, cfg.pretrained)
    # channels_last convolutions measured 5-20% faster per training step on these CPUs (bf16 and fp32);
    # on CUDA they are what the tensor cores want under autocast
    layout = (
        torch.channels_last
        if device.type == "cpu" or cfg.precision in ("bf16", "fp16")
        else torch.contiguous_format
    )
    net_g.to(device, memory_format=layout).train()
    net_d = (
        build_discriminator(recipe).to(device, memory_format=layout).train() if losses_cfg.uses_gan else None
    )
    ema = EMA(net_g, cfg.ema_decay) if cfg.ema_decay > 0 else None

    optim_g = adam(net_g, recipe.optim_g)
    sched_g = scheduler(optim_g, recipe.scheduler)
    optim_d = adam(net_d, recipe.optim_d) if net_d is not None else None
    sched_d = scheduler(optim_d, recipe.scheduler) if optim_d is not None else None
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    precision = MixedPrecision(
        device.type, {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision), scaler
    )
    objective = Objective(
        weights=losses_cfg,
        pixel=PixelLoss(losses_cfg.pixel),
        perceptual=PerceptualLoss(
            vgg.to(device),
            losses_cfg.perceptual_criterion,
            losses_cfg.perceptual_feature_scale,
            losses_cfg.perceptual_layer_weights,
        )
        if losses_cfg.uses_vgg
        else None,
        gan=GANLoss(losses_cfg.gan) if losses_cfg.uses_gan else None,
    )

    history: dict[str, Any] = {"losses": {}, "psnr": [], "ssim": []}
    wall_time = 0.0
    # the command that started the run, then each that resumed it
    commands = (earlier_commands(checkpoint, run_dir / f"{recipe.name}.json") if checkpoint else []) + (
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
    bicubic_scores = measure_bicubic(validation, scale)
    requirement = architecture.requirement(recipe.model.config)

    def validate(iteration: int) -> tuple[float, float]:
        network = ema.net if ema is not None else distributed.unwrap(net_g)
        scores, triples = validate_images(network, validation, scale, device, requirement)
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

            sr, values = generator_step(net_g, net_d, lq, gt, objective, optim_g, precision)
            if net_d is not None:
                values |= discriminator_step(net_d, sr, gt, objective.gan, optim_d, precision)

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
                    report(progress_line(iteration, cfg.iterations, means, lr, rate))
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
            card = write_card(
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

"""Published models by name: a small manifest of weights that people use (name, architecture, scale,
licence, source URL, sha256, size), fetched only when asked (`upscale models pull NAME`) into a
per-user folder, resumable, and never used before its hash is checked.

pooch does the caching and the hash check; the downloader below adds what pooch's lacks: resuming a
partial file with an HTTP Range request, a stall timeout, and one-line errors.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from upscaler.errors import ModelError

MODELS_ENV = "UPSCALER_MODELS_DIR"
# Seconds without a byte before a download counts as stalled.
STALL_SECONDS = 30.0
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Published:
    """One published weights file. `sha256` and `size` are the publisher's file (size 0: not recorded)."""

    name: str
    arch: str
    scale: int
    licence: str
    url: str
    sha256: str
    size: int
    description: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_REAL_ESRGAN = "https://github.com/xinntao/Real-ESRGAN/releases/download"
ZOO: tuple[Published, ...] = (
    Published(
        name="RealESRGAN_x4plus",
        arch="rrdbnet",
        scale=4,
        licence="BSD-3-Clause (xinntao/Real-ESRGAN)",
        url=f"{_REAL_ESRGAN}/v0.1.0/RealESRGAN_x4plus.pth",
        sha256="4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
        size=67040989,
        description="Real-ESRGAN's general model: RRDBNet 23 x 64 on real-world degradations",
    ),
    Published(
        name="RealESRGAN_x4plus_anime_6B",
        arch="rrdbnet",
        scale=4,
        licence="BSD-3-Clause (xinntao/Real-ESRGAN)",
        url=f"{_REAL_ESRGAN}/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth",
        sha256="f872d837d3c90ed2e05227bed711af5671a6fd1c9f7d7e91c911a61f155e99da",
        size=0,  # not recorded where its hash was checked
        description="Real-ESRGAN for anime illustrations: RRDBNet 6 x 64",
    ),
    Published(
        name="RealESRGAN_x2plus",
        arch="rrdbnet",
        scale=2,
        licence="BSD-3-Clause (xinntao/Real-ESRGAN)",
        url=f"{_REAL_ESRGAN}/v0.2.1/RealESRGAN_x2plus.pth",
        sha256="49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
        size=0,
        description="Real-ESRGAN's general model at x2: RRDBNet 23 x 64, pixel-unshuffled input",
    ),
    Published(
        name="realesr-animevideov3",
        arch="compact",
        scale=4,
        licence="BSD-3-Clause (xinntao/Real-ESRGAN)",
        url=f"{_REAL_ESRGAN}/v0.2.5.0/realesr-animevideov3.pth",
        sha256="b8a8376811077954d82ca3fcf476f1ac3da3e8a68a4f4d71363008000a18b75d",
        size=0,
        description="Real-ESRGAN for anime video: SRVGGNetCompact 64 x 16",
    ),
    Published(
        name="realesr-general-x4v3",
        arch="compact",
        scale=4,
        licence="BSD-3-Clause (xinntao/Real-ESRGAN)",
        url=f"{_REAL_ESRGAN}/v0.2.5.0/realesr-general-x4v3.pth",
        sha256="8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292",
        size=4885111,
        description="Real-ESRGAN's fast general model: SRVGGNetCompact 64 x 32 on real-world degradations",
    ),
    Published(
        name="realesr-general-wdn-x4v3",
        arch="compact",
        scale=4,
        licence="BSD-3-Clause (xinntao/Real-ESRGAN)",
        url=f"{_REAL_ESRGAN}/v0.2.5.0/realesr-general-wdn-x4v3.pth",
        sha256="1641f8c4464b9f097c9fdda5589273713f67cf59f3d909e0bd688f0cee269dca",
        size=0,
        description="realesr-general-x4v3's companion trained to keep noise (the 'weak denoise' end)",
    ),
    Published(
        name="ESRGAN",
        arch="rrdbnet",
        scale=4,
        licence="Apache-2.0 (xinntao/ESRGAN; the file as cszn/KAIR mirrors it)",
        url="https://github.com/cszn/KAIR/releases/download/v1.0/ESRGAN.pth",
        sha256="65fece06e1ccb48853242aa972bdf00ad07a7dd8938d2dcbdf4221b59f6372ce",
        size=0,
        description="ESRGAN's official x4 GAN model (RRDB_ESRGAN_x4): RRDBNet 23 x 64",
    ),
)


def zoo_dir() -> Path:
    """Where pulled models are kept: $UPSCALER_MODELS_DIR, else the per-user data folder platformdirs
    names for `upscaler` (~/.local/share/upscaler/models on Linux)."""
    explicit = os.environ.get(MODELS_ENV)
    if explicit:
        return Path(explicit).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("upscaler")) / "models"


def find_published(name: str) -> Published | None:
    return next((entry for entry in ZOO if entry.name.lower() == name.lower()), None)


def pulled_path(entry: Published) -> Path | None:
    """The checked file of `entry` in the zoo folder, or None when it has not been pulled."""
    path = zoo_dir() / entry.filename
    return path if path.is_file() else None


class ResumingDownloader:
    """A pooch downloader that continues `<file>.part` from where an earlier attempt stopped."""

    def __init__(self, part: Path, timeout: float, progress: Callable[[int, int], None] | None) -> None:
        self.part, self.timeout, self.progress = part, timeout, progress

    def __call__(self, url: str, output_file: str, pooch_object: object, check_only: bool = False) -> bool:
        import requests

        if check_only:
            return True
        resume = "run the same command again: it continues where it stopped"
        have = self.part.stat().st_size if self.part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        total = 0
        try:
            with requests.get(url, headers=headers, stream=True, timeout=self.timeout) as response:
                if response.status_code not in (200, 206, 416):  # 416: the part is whole already
                    raise ModelError(f"cannot download {url}: HTTP {response.status_code} {response.reason}")
                if response.status_code != 416:
                    if response.status_code == 200:
                        have = 0  # the server ignored the Range: start again
                    total = have + int(response.headers.get("Content-Length", 0) or 0)
                    with self.part.open("ab" if have else "wb") as handle:
                        for chunk in response.iter_content(_CHUNK):
                            handle.write(chunk)
                            have += len(chunk)
                            if self.progress is not None:
                                self.progress(have, total)
        except requests.exceptions.RequestException as exc:
            # a read timeout inside a streamed body arrives as a ConnectionError that says so
            if isinstance(exc, requests.exceptions.Timeout) or "timed out" in str(exc).lower():
                raise ModelError(
                    f"the download of {url} stalled (no data for {self.timeout:.0f} s)", hint=resume
                ) from None
            if have:
                raise ModelError(f"the download of {url} stopped after {have} bytes", hint=resume) from None
            raise ModelError(
                f"cannot download {url}: {exc.__class__.__name__}",
                hint=f"check the connection, then {resume}",
            ) from None
        if total and have < total:
            raise ModelError(f"the download of {url} stopped after {have} of {total} bytes", hint=resume)
        os.replace(self.part, output_file)
        return True


def pull(
    entry: Published,
    *,
    timeout: float = STALL_SECONDS,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Fetch `entry` into the zoo folder (continuing a partial download), check its sha256, and return
    the file. A file whose hash does not match is deleted and refused."""
    import pooch

    folder = zoo_dir()
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f"{entry.filename}.part"
    downloader = ResumingDownloader(part, timeout, progress)
    try:
        path = pooch.retrieve(
            entry.url,
            known_hash=f"sha256:{entry.sha256}",
            fname=entry.filename,
            path=folder,
            downloader=downloader,
        )
    except ValueError as exc:
        if "hash" not in str(exc).lower():
            raise
        part.unlink(missing_ok=True)
        raise ModelError(
            f"{entry.name}: the downloaded file's sha256 does not match the manifest's "
            f"({entry.sha256[:12]}...); it was deleted and is not used",
            hint="the file at the source has changed or was damaged on the way; report it if it persists",
        ) from None
    return Path(path)

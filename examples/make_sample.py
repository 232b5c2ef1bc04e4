"""Re-make examples/big_buck_bunny_320x180.mp4 from the shared 720p clip (how the sample was cut).

    python examples/make_sample.py ../shared/data/video/big_buck_bunny_432_433.webm

The source is 1 s of Big Buck Bunny (c) Blender Foundation, CC-BY 3.0, as found in Zulko/moviepy's
media folder. Each frame is shrunk 4x with area averaging, so `upscale video ... --model X` (x4)
gives back 1280x720 to compare with the original; the Vorbis audio becomes AAC for MP4.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2

WIDTH, HEIGHT = 320, 180


def make_sample(source: Path, destination: Path) -> None:
    with av.open(str(source)) as inp, av.open(str(destination), "w") as out:
        video_in = inp.streams.video[0]
        audio_in = inp.streams.audio[0]
        rate = video_in.average_rate or Fraction(24)
        video_out = out.add_stream("libx264", rate=rate)
        video_out.width, video_out.height, video_out.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        # crf 16 keeps the shrunken frames close to lossless: the sample shows the model, not x264
        video_out.options = {"crf": "16", "preset": "slow"}
        video_out.codec_context.time_base = Fraction(1, int(rate))
        audio_out = out.add_stream("aac", rate=audio_in.codec_context.sample_rate, layout="stereo")
        audio_out.bit_rate = 128_000
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=audio_in.codec_context.sample_rate)
        index = 0
        for packet in inp.demux(video_in, audio_in):
            for frame in packet.decode():
                if packet.stream.type == "video":
                    rgb = frame.to_ndarray(format="rgb24")
                    small = cv2.resize(rgb, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
                    shrunk = av.VideoFrame.from_ndarray(small, format="rgb24")
                    shrunk.pts, shrunk.time_base = index, Fraction(1, int(rate))
                    index += 1
                    out.mux(video_out.encode(shrunk.reformat(format="yuv420p")))
                else:
                    frame.pts = None
                    for resampled in resampler.resample(frame):
                        out.mux(audio_out.encode(resampled))
        for resampled in resampler.resample(None):
            out.mux(audio_out.encode(resampled))
        out.mux(video_out.encode(None))
        out.mux(audio_out.encode(None))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/make_sample.py path/to/big_buck_bunny_432_433.webm")
    make_sample(Path(sys.argv[1]), Path(__file__).resolve().parent / "big_buck_bunny_320x180.mp4")

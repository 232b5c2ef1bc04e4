"""No command touches the network: every connect and send is watched at the system-call level.

A Python-level socket patch cannot see ONNX Runtime's telemetry (native code) or OpenVINO's (a child
process), so each command runs under `strace -f`, followed into every thread and child, and stays
alive LINGER_S seconds after it finishes: ONNX Runtime's uploader resolved its host about 9 s after
`import onnxruntime`. Any connect or send to an address other than loopback or a local socket fails
the test, a DNS query (port 53) included. HOME and the XDG folders point into the test's folder, so
anything a runtime writes into a home directory (OpenVINO's ~/intel) is seen too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import tiny_weights
from tests.upscaler.video_clips import cfr_clip

ROOT = Path(__file__).resolve().parents[1]
LINGER_S = 12
# Runs `upscale ARGS...`, then waits until LINGER_S seconds after the start, whatever happened.
RUNNER = (
    "import sys, time\n"
    "from upscaler.cli import cli\n"
    "started = time.monotonic()\n"
    "try:\n"
    "    cli.main(sys.argv[2:], prog_name='upscale')\n"
    "finally:\n"
    "    time.sleep(max(0.0, float(sys.argv[1]) - (time.monotonic() - started)))\n"
)
CALL = re.compile(r"^\d+\s+(connect|sendto|sendmsg)\((.*)$")
LOOPBACK = re.compile(r'inet_addr\("127\.|inet_pton\(AF_INET6, "::1"|"::ffff:127\.')


def outside_calls(trace: str) -> list[str]:
    """The connect/sendto/sendmsg calls in an strace log that reach past this machine's loopback."""
    found = []
    for line in trace.splitlines():
        match = CALL.match(line)
        if match is None:
            continue
        arguments = match.group(2)
        if "AF_INET" not in arguments:  # AF_UNIX, AF_NETLINK, or a send on a connected socket
            if match.group(1) != "connect" and "htons(53)" in arguments:
                found.append(line)
            continue
        if not LOOPBACK.search(arguments):
            found.append(line)
    return found


def test_the_parser_sees_dns_and_outside_connects_and_lets_loopback_pass() -> None:
    trace = "\n".join(
        [
            '12 connect(6, {sa_family=AF_UNIX, sun_path="/var/run/nscd/socket"}, 110) = -1 ENOENT',
            '12 connect(8, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.0.0.53")}, 16) = 0',
            '13 connect(9, {sa_family=AF_INET, sin_port=htons(8786), sin_addr=inet_addr("127.0.0.1")}, 16)',
            '14 connect(3, {sa_family=AF_INET6, sin6_port=htons(443), inet_pton(AF_INET6, "2001:db8::1", '
            "&sin6_addr)}, 28) = -1",
            '15 sendto(8, "\\177\\262\\1\\0\\6mobile\\6events", 50, MSG_NOSIGNAL, NULL, 0) = 50',
        ]
    )
    outside = outside_calls(trace)
    assert len(outside) == 2
    assert "htons(53)" in outside[0] and "2001:db8::1" in outside[1]


def image(path: Path, side: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    assert cv2.imwrite(str(path), rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    return path


def commands(tmp_path: Path, weights: Path) -> dict[str, list[str]]:
    pictures = tmp_path / "pictures"
    image(pictures / "a.png")
    hr = tmp_path / "set" / "HR"
    image(hr / "b.png", 32)
    clip = cfr_clip(tmp_path, frames=4)
    model = ["--model", str(weights)]
    return {
        "backends": ["backends"],
        "images-torch": ["images", str(pictures), "-o", str(tmp_path / "o1"), *model, "--backend", "torch"],
        "images-openvino": [
            "images", str(pictures), "-o", str(tmp_path / "o2"), *model, "--backend", "openvino",
        ],
        # NNCF quantizes on this first run; it sends telemetry unless kept from it (runtimes.import_nncf).
        "images-int8": [
            "images", str(pictures), "-o", str(tmp_path / "o3"), *model, "--precision", "int8",
        ],
        "video-onnxruntime": [
            "video", str(clip), str(tmp_path / "out.mp4"), *model, "--backend", "onnxruntime",
            "--progress", "none",
        ],
        "eval": ["eval", "--data", str(tmp_path / "set"), *model, "--no-progress"],
        "bench": [
            "bench", *model, "--no-video", "--repeat", "1", "--warmup", "0", "--size", "32x32",
        ],
    }  # fmt: skip


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (Debian package strace)")
def test_no_command_makes_a_network_connection(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    weights = tiny_weights(tmp_path, "compact")
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "UPSCALER_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("ORT_DISABLE_TELEMETRY", None)  # the tool must turn it off itself
    running = {}
    for name, args in commands(tmp_path, weights).items():
        log = tmp_path / f"{name}.strace"
        command = ["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(log)]
        command += [sys.executable, "-c", RUNNER, str(LINGER_S), *args]
        output = subprocess.PIPE
        process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT)
        running[name] = (process, log)
    failures = []
    for name, (process, log) in running.items():
        output = process.communicate(timeout=600)[0].decode(errors="replace")
        assert process.returncode == 0, f"{name} failed:\n{output}"
        outside = outside_calls(log.read_text())
        if outside:
            failures.append(f"{name}: " + "; ".join(outside[:3]))
    assert not failures, "network calls:\n" + "\n".join(failures)
    written = sorted(str(path.relative_to(home)) for path in home.rglob("*") if path.is_file())
    assert not [path for path in written if path.startswith(("intel", ".cache/Microsoft"))], written

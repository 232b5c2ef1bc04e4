"""Opening a Dask cluster: the scheduler at an address, or a cluster of worker processes started here.

    with open_cluster("local:2") as client:        # or "tcp://10.0.0.5:8786"
        ...

A local cluster listens on 127.0.0.1 only and has no dashboard: nothing reaches past this machine.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

from upscaler.errors import UpscaleError

INSTALL_HINT = 'install Dask\'s distributed: pip install "upscaler[cluster]" (or pip install distributed)'
_LOCAL = re.compile(r"^local(?::(\d+))?$")
_ADDRESS = re.compile(r"^(?:(tcp|tls|ucx|inproc)://)?[\w.\-\[\]:]+:\d+$")
# How long to wait for a scheduler that does not answer.
CONNECT_TIMEOUT_S = 20


def check_address(address: str) -> str:
    """`address` if it names a cluster (`local`, `local:N`, `[tcp://]host:port`), else an UpscaleError."""
    match = _LOCAL.match(address)
    if match is not None:
        if match.group(1) is not None and int(match.group(1)) < 1:
            raise UpscaleError(f"--cluster {address}: a local cluster needs at least 1 worker")
        return address
    if _ADDRESS.match(address) is None:
        raise UpscaleError(
            f"--cluster: expected a scheduler address (tcp://host:8786) or local[:N], got {address!r}"
        )
    return address


def import_distributed() -> Any:
    """Dask's `distributed`, or an UpscaleError that says how to install it."""
    try:
        import distributed
    except ImportError:
        raise UpscaleError("--cluster needs Dask's distributed package", hint=INSTALL_HINT) from None
    return distributed


def local_workers(address: str) -> int | None:
    """How many worker processes `local[:N]` starts (N, else 1), or None for an address. One by default:
    one process already uses every core, and more on the same cores only share them (BENCHMARKS.md)."""
    match = _LOCAL.match(address)
    if match is None:
        return None
    return int(match.group(1)) if match.group(1) is not None else 1


@contextlib.contextmanager
def open_cluster(address: str) -> Iterator[Any]:
    """A `distributed.Client` connected to `address`; for `local[:N]`, N worker processes started on
    127.0.0.1 (one thread each: a worker runs one part or image at a time), stopped on leaving."""
    check_address(address)
    distributed = import_distributed()
    workers = local_workers(address)
    with contextlib.ExitStack() as stack:
        if workers is not None:
            cluster = stack.enter_context(
                distributed.LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    # The jobs bound their own memory; Dask's default pauses a worker at 80% of RAM / N.
                    memory_limit=0,
                    silence_logs=logging.ERROR,
                )
            )
            client = stack.enter_context(distributed.Client(cluster))
        else:
            try:
                client = stack.enter_context(distributed.Client(address, timeout=CONNECT_TIMEOUT_S))
            except (OSError, TimeoutError) as error:
                raise UpscaleError(
                    f"--cluster {address}: cannot reach the scheduler ({error})",
                    hint="start it with `dask scheduler` and check the address and port",
                ) from None
        yield client


def worker_count(client: Any) -> int:
    """How many workers the cluster has now (at least 1, for sizing what is kept in flight)."""
    return max(1, len(client.scheduler_info().get("workers", {})))


def workers_phrase(client: Any) -> str:
    """`1 worker`, `3 workers`: the cluster's size, for the command's first line."""
    count = len(client.scheduler_info().get("workers", {}))
    return f"{count} worker" if count == 1 else f"{count} workers"

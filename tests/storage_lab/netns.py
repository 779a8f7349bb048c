"""Run Python code (boto3, urllib) of the test process inside a lab machine's network stack: a thread pool whose
threads each join the machine's network namespace with setns(2) before their first task. A network namespace is a
per-thread attribute, and a socket keeps the namespace it was created in, so every connection a client opens from
these threads is the lab machine's; the rest of the test process stays in the host's namespace. Only the network
namespace changes (mounts, files and the CA bundle paths are the host's)."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from tests.lab.netlab import Host

CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def _join(ns: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into network namespace {ns}: {os.strerror(err)}")
    finally:
        os.close(fd)


class InHost:
    """`with InHost(host, workers=8) as net: net.call(fn, *args)` runs fn in one of the pool's threads, all of
    which live in `host`'s network namespace."""

    def __init__(self, host: Host, *, workers: int = 4) -> None:
        self.host = host
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"netns-{host.name}",
                                       initializer=_join, initargs=(host.ns,))

    def call(self, fn: Callable[..., T], *args: object, timeout: float = 300) -> T:
        return self.pool.submit(fn, *args).result(timeout=timeout)

    def submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        return self.pool.submit(fn, *args)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> InHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

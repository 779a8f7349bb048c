"""The replicated storage world shared by the modules that can share it: `cloudless up --s3-port` and four storage
agents (R = 2). Its users are named test_replicated_* so they run after the modules with worlds of their own
(erasure coding, replicated coordinators): a session fixture lives until the session ends, and two idle worlds at
once is more than a 2-core CI machine needs. Modules that kill nodes leave them running again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.storage_lab.world import World, world


@pytest.fixture(scope="session")
def w4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world(tmp_path_factory.mktemp("storage-lab"), storage_nodes=4) as built:
        yield built
        print("\n[storage lab] measured:\n" + "\n".join(f"  {k}: {v}" for k, v in built.numbers.items()))

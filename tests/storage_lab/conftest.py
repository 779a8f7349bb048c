"""The replicated storage world shared by the modules that can share it (building one costs ~1 min on CI):
`cloudless up --s3-port` and four storage agents. Modules that kill nodes leave them running again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.storage_lab.world import World, world


@pytest.fixture(scope="session")
def w4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world(tmp_path_factory.mktemp("storage-lab"), storage_nodes=4) as built:
        yield built
        print("\n[storage lab] measured:\n" + "\n".join(f"  {k}: {v}" for k, v in built.numbers.items()))

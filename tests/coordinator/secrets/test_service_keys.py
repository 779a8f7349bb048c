"""Master keys and the service: startup refuses a missing or wrong key, rotation re-wraps every version's data key
with reads going on, values never re-encrypted, and the old key no longer needed afterwards."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from coordinator.secrets import KeySource, MasterKeyError, SecretsService, masterkey, secrets_present
from coordinator.secrets.envelope import Keyring, MasterKey
from coordinator.store import Entry, SqliteStore
from tests.coordinator.secrets.builders import (
    ADMIN,
    K1,
    K2,
    VIEWER,
    FakeClock,
    YieldingStore,
    make_service,
    ok,
    rejected,
)


async def fill(svc: SecretsService) -> dict[tuple[str, int], dict[str, bytes]]:
    """Three secrets, some with several versions; returns every (name, version) -> values."""
    expected: dict[tuple[str, int], dict[str, bytes]] = {}
    for i, name in enumerate(["a", "b", "c"]):
        data = {"k": f"{name}-1".encode()}
        ok(await svc.create("prod", name, data, caller=ADMIN))
        expected[(name, 1)] = data
        for v in range(2, i + 3):
            data = {"k": f"{name}-{v}".encode()}
            ok(await svc.update("prod", name, caller=ADMIN, data=data))
            expected[(name, v)] = data
    return expected


async def assert_readable(svc: SecretsService, expected: dict[tuple[str, int], dict[str, bytes]]) -> None:
    for (name, version), data in expected.items():
        assert dict(ok(await svc.read("prod", name, caller=ADMIN, version=version)).data) == data


def wrapping_key_ids(entries: list[Entry]) -> set[str]:
    return {json.loads(e.value)["sealed"]["dataKey"]["keyId"] for e in entries}


def value_ciphertexts(entries: list[Entry]) -> dict[str, object]:
    return {e.key: json.loads(e.value)["sealed"]["values"] for e in entries}


async def test_rotation_rewraps_data_keys_only_and_keeps_every_version_readable(tmp_path: Path) -> None:
    store = SqliteStore(":memory:")
    source = KeySource(tmp_path / "secrets.key")
    loaded = masterkey.load(source, secrets_present=await secrets_present(store))
    assert loaded.created
    svc = await SecretsService.open(store, loaded.keyring, clock=FakeClock())
    expected = await fill(svc)
    before = await store.list("/secrets/v/")
    assert wrapping_key_ids(before) == {loaded.keyring.active_id}

    new_ring = masterkey.rotate(source)
    rotation = ok(await svc.rotate_master_key(new_ring, caller=ADMIN))
    after = await store.list("/secrets/v/")
    assert (rotation.key_id, rotation.rewrapped, rotation.versions) == (new_ring.active_id, len(before), len(before))
    assert wrapping_key_ids(after) == {new_ring.active_id}
    assert value_ciphertexts(after) == value_ciphertexts(before)  # values were not re-encrypted
    await assert_readable(svc, expected)
    again = ok(await svc.rotate_master_key(new_ring, caller=ADMIN))
    assert again.rewrapped == 0  # idempotent

    # a restart with only the new key: nothing needs the old one any more
    only_new = Keyring.of(new_ring.active)
    await assert_readable(await SecretsService.open(store, only_new, clock=FakeClock()), expected)


async def test_reads_go_on_during_rotation() -> None:
    store = YieldingStore(SqliteStore(":memory:"))
    svc = await make_service(store)
    expected = await fill(svc)

    async def reader() -> int:
        reads = 0
        for _ in range(20):
            for (name, version), data in expected.items():
                assert dict(ok(await svc.read("prod", name, caller=ADMIN, version=version)).data) == data
                reads += 1
        return reads

    rotation, reads = await asyncio.gather(svc.rotate_master_key(Keyring.of(K1).with_active(K2), caller=ADMIN),
                                           reader())
    assert ok(rotation).rewrapped == len(expected) and reads == 20 * len(expected)


async def test_writes_during_rotation_are_not_lost() -> None:
    store = YieldingStore(SqliteStore(":memory:"))
    svc = await make_service(store)
    expected = await fill(svc)

    async def writer() -> None:
        for n in range(5):
            data = {"k": f"new-{n}".encode()}
            info = ok(await svc.update("prod", "c", caller=ADMIN, data=data))
            expected[("c", info.active_version)] = data

    await asyncio.gather(svc.rotate_master_key(Keyring.of(K1).with_active(K2), caller=ADMIN), writer())
    ok(await svc.rotate_master_key(svc.keyring, caller=ADMIN))  # finish any version written under k1 meanwhile
    assert wrapping_key_ids(await store.list("/secrets/v/")) == {"k2"}
    await assert_readable(await SecretsService.open(store, Keyring.of(K2), clock=FakeClock()), expected)


async def test_rotation_to_a_keyring_without_the_old_key_is_refused() -> None:
    svc = await make_service()
    expected = await fill(svc)
    with pytest.raises(MasterKeyError, match="k1"):
        await svc.rotate_master_key(Keyring.of(K2), caller=ADMIN)
    await assert_readable(svc, expected)  # nothing switched


async def test_rotation_needs_an_admin() -> None:
    svc = await make_service()
    assert rejected(await svc.rotate_master_key(Keyring.of(K1).with_active(K2), caller=VIEWER)).status == 403


async def test_start_with_secrets_and_no_key_refuses(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    source = KeySource(tmp_path / "secrets.key")
    svc = await SecretsService.open(store, masterkey.load(source, secrets_present=False).keyring, clock=FakeClock())
    ok(await svc.create("prod", "db", {"k": b"v"}, caller=ADMIN))
    await store.close()
    (tmp_path / "secrets.key").unlink()  # the operator lost the key file

    store = SqliteStore(tmp_path / "state.db")
    assert await secrets_present(store)
    with pytest.raises(MasterKeyError, match="refusing to create a new key"):
        masterkey.load(source, secrets_present=await secrets_present(store))
    assert not (tmp_path / "secrets.key").exists()


async def test_restart_with_the_key_file_keeps_secrets_readable(tmp_path: Path) -> None:
    source = KeySource(tmp_path / "secrets.key")
    store = SqliteStore(tmp_path / "state.db")
    svc = await SecretsService.open(store, masterkey.load(source, secrets_present=False).keyring, clock=FakeClock())
    ok(await svc.create("prod", "db", {"k": b"v"}, caller=ADMIN))
    await store.close()
    store = SqliteStore(tmp_path / "state.db")
    loaded = masterkey.load(source, secrets_present=await secrets_present(store))
    svc = await SecretsService.open(store, loaded.keyring, clock=FakeClock())
    assert not loaded.created
    assert dict(ok(await svc.read("prod", "db", caller=ADMIN)).data) == {"k": b"v"}


async def test_a_wrong_key_with_the_same_id_refuses_to_start() -> None:
    store = SqliteStore(":memory:")
    svc = await make_service(store)
    ok(await svc.create("prod", "db", {"k": b"v"}, caller=ADMIN))
    with pytest.raises(MasterKeyError, match="not the key the secrets were written with"):
        await SecretsService.open(store, Keyring.of(MasterKey("k1", bytes(32))), clock=FakeClock())


async def test_a_different_key_refuses_to_start() -> None:
    store = SqliteStore(":memory:")
    svc = await make_service(store)
    ok(await svc.create("prod", "db", {"k": b"v"}, caller=ADMIN))
    with pytest.raises(MasterKeyError, match="wrapped by master key"):
        await SecretsService.open(store, Keyring.of(K2), clock=FakeClock())


async def test_a_different_key_is_fine_while_there_are_no_secrets() -> None:
    store = SqliteStore(":memory:")
    await make_service(store)
    await SecretsService.open(store, Keyring.of(K2), clock=FakeClock())

"""Secrets on the node (edge_agent/secrets.py): boxes open only for this node, values land on a tmpfs with the
spec's modes, the env fragment reproduces every value exactly when sourced, updates happen in place, and the
process runtime runs a workload with its secret env without the value reaching argv or its on-disk metadata."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import sealed, wire
from edge_agent.runtime.process import ProcessRuntime
from edge_agent.secret_layout import needs_secrets, restart_on_change, shell_quote, versions_of
from edge_agent.secrets import SecretFiles, SecretUnavailable, SecretVault, find_tmpfs
from tests.edge_agent.builders import make_spec
from tests.need import require_root

NODE = "pi-1"
KEY = ec.generate_private_key(ec.SECP256R1())


def box(name: str, version: int, values: dict[str, bytes], *, node: str = NODE, ns: str = "default",
        key: ec.EllipticCurvePrivateKey = KEY) -> wire.SealedSecret:
    plain = msgpack.packb(values, use_bin_type=True)
    return wire.SealedSecret(secret=name, version=version,
                             box=sealed.seal(key.public_key(), plain, sealed.delivery_aad(node, ns, name, version)))


def spec_with(*boxes: wire.SealedSecret, **kw: object) -> wire.ReplicaSpec:
    return make_spec("web-0", secrets=boxes, **kw)  # type: ignore[arg-type]


@pytest.fixture
def files(tmp_path: Path) -> SecretFiles:
    return SecretFiles(NODE, SecretVault(NODE, lambda: KEY), tmp_path, cluster="c1")


# ---- the vault --------------------------------------------------------------------------------------------------


def test_a_box_opens_only_for_its_node_secret_and_version() -> None:
    vault = SecretVault(NODE, lambda: KEY)
    assert vault.open("default", box("db", 1, {"password": b"s3cret"})) == {"password": b"s3cret"}
    for wrong in (box("db", 1, {"p": b"x"}, node="other"), box("db", 1, {"p": b"x"}, ns="prod"),
                  box("db", 1, {"p": b"x"}, key=ec.generate_private_key(ec.SECP256R1()))):
        with pytest.raises(SecretUnavailable, match="does not open"):
            vault.open("default", wrong)
    renamed = box("db", 1, {"p": b"x"})
    with pytest.raises(SecretUnavailable):
        vault.open("default", wire.SealedSecret(secret="other", version=1, box=renamed.box))
    with pytest.raises(SecretUnavailable):
        vault.open("default", wire.SealedSecret(secret="db", version=2, box=renamed.box))


def test_no_enrolled_key_says_so() -> None:
    with pytest.raises(SecretUnavailable, match="no enrolled key"):
        SecretVault(NODE, lambda: None).open("default", box("db", 1, {"p": b"x"}))


def test_opened_values_are_cached_for_the_ttl_only() -> None:
    now = [0.0]
    loads = []

    def load() -> ec.EllipticCurvePrivateKey:
        loads.append(1)
        return KEY
    vault = SecretVault(NODE, load, ttl_s=60, clock=lambda: now[0])
    b = box("db", 1, {"p": b"x"})
    vault.open("default", b)
    vault.open("default", b)
    assert len(loads) == 1
    now[0] = 61
    vault.open("default", b)
    assert len(loads) == 2


def test_a_box_whose_content_is_not_a_map_is_refused() -> None:
    bad = sealed.seal(KEY.public_key(), msgpack.packb([1, 2]), sealed.delivery_aad(NODE, "default", "db", 1))
    with pytest.raises(SecretUnavailable, match="not a"):
        SecretVault(NODE, lambda: KEY).open("default", wire.SealedSecret(secret="db", version=1, box=bad))


# ---- files and env ----------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=200))
def test_the_env_fragment_reproduces_any_value_exactly(value: str) -> None:
    out = subprocess.run(["/bin/sh", "-c", f"X={shell_quote(value)}; printf %s \"$X\""], capture_output=True,
                         check=True).stdout
    assert out.decode() == value


def test_materialize_writes_env_and_files_with_modes(files: SecretFiles) -> None:
    spec = spec_with(box("db", 3, {"password": b"it's \"quoted\"\nand $HOME `x`", "user": b"app"}),
                     box("tls", 1, {"tls.key": b"KEY", "tls.crt": b"CRT"}),
                     secret_env=(wire.SecretEnv(name="DB_PASSWORD", secret="db", key="password"),
                                 wire.SecretEnv(name="DB_USER", secret="db", key="user")),
                     secret_volumes=(wire.SecretVolume(secret="tls", mount_path="/etc/tls", items=(
                         wire.SecretFile(key="tls.key", path="private/server.key", mode=0o400),
                         wire.SecretFile(key="tls.crt", path="server.crt", mode=0o444))),
                         wire.SecretVolume(secret="db", mount_path="/run/db", default_mode=0o440)))
    m = files.materialize(spec)
    assert m.versions == "db:3,tls:1" == versions_of(spec)
    env_file = m.env_dir / "env.sh"  # type: ignore[operator]
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o400
    out = subprocess.run(["/bin/sh", "-c", f'set -a; . {env_file}; set +a; printf "%s|%s" "$DB_PASSWORD" "$DB_USER"'],
                         capture_output=True, check=True).stdout
    assert out == b"it's \"quoted\"\nand $HOME `x`|app"
    (tls, tls_mount), (db, db_mount) = m.volumes
    assert (tls_mount, db_mount) == ("/etc/tls", "/run/db")
    assert (tls / "private" / "server.key").read_bytes() == b"KEY"
    assert stat.S_IMODE((tls / "private" / "server.key").stat().st_mode) == 0o400
    assert stat.S_IMODE((tls / "server.crt").stat().st_mode) == 0o444
    assert sorted(p.name for p in db.iterdir()) == ["password", "user"]  # no items: every key, named after it
    assert stat.S_IMODE((db / "user").stat().st_mode) == 0o440
    top = files.top
    # a root agent's workloads may run as other users, who must pass through (not list) to their own files
    assert top is not None and stat.S_IMODE(top.stat().st_mode) == (0o711 if os.geteuid() == 0 else 0o700)


def test_files_are_updated_in_place_and_removed_keys_disappear(files: SecretFiles) -> None:
    vol = (wire.SecretVolume(secret="api", mount_path="/run/api"),)
    first = files.materialize(spec_with(box("api", 1, {"token": b"one", "old": b"x"}), secret_volumes=vol))
    d = first.volumes[0][0]
    inode = d.stat().st_ino
    second = files.materialize(spec_with(box("api", 2, {"token": b"two"}), secret_volumes=vol))
    assert second.volumes[0][0] == d and d.stat().st_ino == inode  # the same directory: a bind mount sees it
    assert (d / "token").read_bytes() == b"two" and not (d / "old").exists()
    assert not [p for p in d.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_missing_delivery_or_key_names_what_is_missing(files: SecretFiles) -> None:
    env = (wire.SecretEnv(name="TOKEN", secret="api", key="token"),)
    with pytest.raises(SecretUnavailable, match="api has not been delivered"):
        files.materialize(spec_with(secret_env=env))
    with pytest.raises(SecretUnavailable, match="no key 'token'"):
        files.materialize(spec_with(box("api", 1, {"other": b"x"}), secret_env=env))
    with pytest.raises(SecretUnavailable, match="not UTF-8"):
        files.materialize(spec_with(box("api", 1, {"token": b"\xff\xfe"}), secret_env=env))


def test_no_tmpfs_means_no_secrets_rather_than_the_disk() -> None:
    with pytest.raises(SecretUnavailable, match="no tmpfs"):
        SecretFiles(NODE, SecretVault(NODE, lambda: KEY), None, cluster="c1").materialize(
            spec_with(box("a", 1, {"k": b"v"}), secret_env=(wire.SecretEnv(name="K", secret="a", key="k"),)))


def test_keep_only_removes_the_files_of_replicas_that_went_away(files: SecretFiles) -> None:
    env = (wire.SecretEnv(name="K", secret="a", key="k"),)
    files.materialize(make_spec("a-0", secrets=(box("a", 1, {"k": b"v"}),), secret_env=env))
    files.materialize(make_spec("a-1", secrets=(box("a", 1, {"k": b"v"}),), secret_env=env))
    files.keep_only({"a-1"})
    assert files.base is not None and sorted(p.name for p in files.base.iterdir()) == ["a-1"]


def test_two_clusters_on_one_tmpfs_keep_each_other_s_files(tmp_path: Path) -> None:
    """Issue 16: two clusters on one machine share the tmpfs and both have a node `local` (NODE here): one agent
    cleaning up after its replicas never deletes the other cluster's secret files."""
    env = (wire.SecretEnv(name="K", secret="a", key="k"),)
    mine = SecretFiles(NODE, SecretVault(NODE, lambda: KEY), tmp_path, cluster="aaaa")
    theirs = SecretFiles(NODE, SecretVault(NODE, lambda: KEY), tmp_path, cluster="bbbb")
    kept = theirs.materialize(make_spec("b-0", secrets=(box("a", 1, {"k": b"v"}),), secret_env=env))
    mine.materialize(make_spec("a-0", secrets=(box("a", 1, {"k": b"v"}),), secret_env=env))
    mine.keep_only(set())
    assert kept.env_dir is not None and (kept.env_dir / "env.sh").exists()
    assert mine.base is not None and list(mine.base.iterdir()) == []


def test_find_tmpfs_picks_a_writable_tmpfs_by_the_longest_mount(tmp_path: Path) -> None:
    mounts = f"tmpfs /dev/shm tmpfs rw 0 0\n/dev/sda1 / ext4 rw 0 0\ntmpfs {tmp_path} tmpfs rw 0 0\n"
    assert find_tmpfs({"XDG_RUNTIME_DIR": str(tmp_path)}, mounts) == tmp_path.resolve()
    on_disk = f"/dev/sda1 / ext4 rw 0 0\ntmpfs {tmp_path}/other tmpfs rw 0 0\n"
    assert find_tmpfs({"XDG_RUNTIME_DIR": str(tmp_path)}, on_disk) in (None, Path("/dev/shm"), Path("/run/shm"))


def test_policies() -> None:
    env = (wire.SecretEnv(name="K", secret="a", key="k"),)
    vol = (wire.SecretVolume(secret="a", mount_path="/a"),)
    assert not needs_secrets(make_spec("x-0"))
    assert restart_on_change(make_spec("x-0", secret_env=env, secret_update=wire.SecretUpdate.FILES))
    assert not restart_on_change(make_spec("x-0", secret_volumes=vol, secret_update=wire.SecretUpdate.FILES))
    assert restart_on_change(make_spec("x-0", secret_volumes=vol))


# ---- the process runtime, for real ------------------------------------------------------------------------------


async def test_process_runtime_gets_secret_env_without_argv_or_disk(files: SecretFiles, tmp_path: Path) -> None:
    value = "pa55-" + os.urandom(6).hex()
    out = tmp_path / "out"
    spec = make_spec("job-0", command=("/bin/sh", "-c", f'printf %s "$DB_PASSWORD" > {out}; sleep 30'),
                     secrets=(box("db", 1, {"password": value.encode()}),),
                     secret_env=(wire.SecretEnv(name="DB_PASSWORD", secret="db", key="password"),))
    rt = ProcessRuntime(node_id=NODE, cluster="c1", root=tmp_path / "process")
    inst = await rt.create(spec, 1, files.materialize(spec))
    await rt.start(inst.instance_id)
    try:
        for _ in range(100):
            if out.exists() and out.read_text():
                break
            await asyncio.sleep(0.05)
        assert out.read_text() == value
        listed = {i.instance_id: i for i in await rt.list()}
        assert listed[inst.instance_id].secrets == "db:1"
        for path in (tmp_path / "process").rglob("*"):  # meta.json, run.json, logs: the value is on none of them
            if path.is_file() and path != out:
                assert value.encode() not in path.read_bytes(), path
        for p in Path("/proc").glob("[0-9]*"):  # nor in any process's argv
            try:
                assert value.encode() not in (p / "cmdline").read_bytes()
            except OSError:
                continue
    finally:
        await rt.stop(inst.instance_id, 2)
        await rt.remove(inst.instance_id)


async def test_process_runtime_refuses_secret_volumes(files: SecretFiles, tmp_path: Path) -> None:
    from edge_agent.errors import SpecUnsupported

    spec = make_spec("job-0", command=("true",), secrets=(box("a", 1, {"k": b"v"}),),
                     secret_volumes=(wire.SecretVolume(secret="a", mount_path="/a"),))
    with pytest.raises(SpecUnsupported, match="secretVolumes"):
        await ProcessRuntime(node_id=NODE, cluster="c1", root=tmp_path / "p").create(spec, 1, files.materialize(spec))


def test_a_secrets_dir_made_by_someone_else_is_refused(tmp_path: Path) -> None:
    """In a shared /dev/shm another user (or a symlink) could own our directory first: we refuse to use it."""
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / f"cloudless-secrets-{os.geteuid()}").symlink_to(target)
    env = (wire.SecretEnv(name="K", secret="a", key="k"),)
    with pytest.raises(SecretUnavailable, match="not a directory owned by"):
        SecretFiles(NODE, SecretVault(NODE, lambda: KEY), tmp_path, cluster="c1").materialize(
            spec_with(box("a", 1, {"k": b"v"}), secret_env=env))
    assert not list(target.iterdir())


def test_a_bad_variable_name_or_a_path_clash_is_the_replicas_problem_only(files: SecretFiles) -> None:
    bad_env = (wire.SecretEnv(name="FOO.BAR", secret="a", key="k"),)
    with pytest.raises(SecretUnavailable, match="variable name"):
        files.materialize(spec_with(box("a", 1, {"k": b"v"}), secret_env=bad_env))
    clash = (wire.SecretVolume(secret="a", mount_path="/a", items=(wire.SecretFile(key="k", path="x"),
                                                                    wire.SecretFile(key="j", path="x/y"))),)
    with pytest.raises(SecretUnavailable, match="cannot write"):  # an OSError, turned into this replica's error
        files.materialize(spec_with(box("a", 1, {"k": b"v", "j": b"w"}), secret_volumes=clash))


def test_files_given_to_a_workload_user_have_no_bits_for_other_users(files: SecretFiles) -> None:
    """A root agent lets a runAsUser workload pass through the directories (0711) to its files; then the files
    themselves must keep every other local user out, whatever mode the spec asked for (review finding)."""
    if os.geteuid() != 0:
        require_root("only a root agent gives files to another user")
    spec = spec_with(box("tls", 1, {"tls.crt": b"CRT"}), secret_volumes=(wire.SecretVolume(
        secret="tls", mount_path="/etc/tls", items=(wire.SecretFile(key="tls.crt", path="server.crt", mode=0o644),)),))
    m = files.materialize(spec, owner=(65534, 65534))
    (vol, _mount), = m.volumes
    crt = vol / "server.crt"
    assert stat.S_IMODE(crt.stat().st_mode) == 0o640 and crt.stat().st_uid == 65534

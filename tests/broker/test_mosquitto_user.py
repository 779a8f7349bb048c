"""Whom the generated Mosquitto config runs as (broker/mosquitto.py `user`, `cloudless broker mosquitto-config
--user`): the default, what that account must be able to open, and a refused name. The real thing — a root-started
Mosquitto dropping to that account and serving TLS with the files it was given — is
tests/integration/test_mosquitto_user.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.acl import Acl
from broker.embedded import TlsSettings
from broker.errors import BrokerConfigError
from broker.mosquitto import ACL_FILE, CONF_FILE, MosquittoSettings, default_user, needs, render


@pytest.mark.parametrize(("euid", "current", "has_mosquitto", "expected"), [
    (0, "root", True, "mosquitto"),  # the distributions' service account, as Mosquitto's own default
    (0, "root", False, "root"),  # no such account: Mosquitto would fall back to `nobody`, who owns nothing
    (1000, "alice", True, "alice"),  # the owner of the 0600 files written
    (1000, "alice", False, "alice"),
], ids=["root-with-mosquitto-account", "root-without", "user-with", "user-without"])
def test_default_user_is_the_owner_of_the_files_written(euid: int, current: str, has_mosquitto: bool,
                                                        expected: str) -> None:
    assert default_user(euid=euid, current=current, mosquitto_account=has_mosquitto) == expected


def test_the_user_line_is_written(tmp_path: Path) -> None:
    lines = render(MosquittoSettings(out_dir=tmp_path, run_as_user="mosquitto"), Acl())[CONF_FILE].splitlines()
    assert "user mosquitto" in lines
    assert not any(line.startswith("user ") for line in
                   render(MosquittoSettings(out_dir=tmp_path), Acl())[CONF_FILE].splitlines())


@pytest.mark.parametrize("name", ["root\nallow_anonymous true", "mos quitto", "", "-x", "a" * 40])
def test_a_name_a_config_could_misread_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(BrokerConfigError, match="user"):
        MosquittoSettings(out_dir=tmp_path, run_as_user=name)


def test_needs_lists_every_file_read_after_dropping_privileges(tmp_path: Path) -> None:
    tls = TlsSettings(tmp_path / "s.pem", tmp_path / "s.key", tmp_path / "ca.pem", True)
    cert = MosquittoSettings(out_dir=tmp_path / "out", tls=tls, cert_auth=True, crl_file=tmp_path / "crl.pem",
                             persistence_dir=tmp_path / "db")
    assert needs(cert) == [("read", (tmp_path / n).resolve()) for n in ("s.pem", "s.key", "ca.pem", "crl.pem")] + [
        ("read", (tmp_path / "out" / ACL_FILE).resolve()), ("write", (tmp_path / "db").resolve())]
    passwords = MosquittoSettings(out_dir=tmp_path / "out")
    assert needs(passwords) == [("read", (tmp_path / "out" / ACL_FILE).resolve()),
                                ("read", (tmp_path / "out" / "passwd").resolve()),
                                ("write", (tmp_path / "out" / "data").resolve())]

"""Pluggable broker authentication: who is connecting, as an `Identity` or a rejection value.

An `Authenticator` sees the CONNECT facts (`ConnectInfo`) and answers `Identity` or `AuthRejected(reason)`.
Implementations here: client certificates (mutual TLS: the identity is the verified certificate's CN, its OU
must agree with the role the ACL gives that name, and revoked serials are refused), password file (Mosquitto
`$7$` format, shared with the production broker) and an explicit anonymous mode for development.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from broker.acl import Acl, Identity, Role
from broker.errors import BrokerConfigError
from broker.files import write_private
from broker.passwords import parse_password_file, render_password_file, verify_password

PASSWD_FILE = "passwd"  # noqa: S105 - a file name, not a password
ROLES_FILE = "roles.toml"


@dataclass(frozen=True, slots=True)
class PeerCert:
    """The facts of a client certificate the TLS layer already verified against the cluster CA."""

    common_name: str
    unit: str  # OU: the role the CA issued it for
    serial: int


@dataclass(frozen=True, slots=True)
class ConnectInfo:
    client_id: str
    username: str | None
    password: str | None
    cert: PeerCert | None = None


def peer_cert(ssl_object: object) -> PeerCert | None:
    """PeerCert from an `ssl.SSLObject` whose handshake verified the client (CERT_REQUIRED); None otherwise."""
    getpeercert = getattr(ssl_object, "getpeercert", None)
    if getpeercert is None:
        return None
    try:
        cert = getpeercert()
    except ValueError:
        return None
    if not cert:
        return None
    fields = {k: v for rdn in cert.get("subject", ()) for k, v in rdn}
    try:
        serial = int(cert.get("serialNumber", "0"), 16)
    except ValueError:
        serial = 0
    return PeerCert(str(fields.get("commonName", "")), str(fields.get("organizationalUnitName", "")), serial)


@dataclass(frozen=True, slots=True)
class AuthRejected:
    reason: str


class Authenticator(Protocol):
    def authenticate(self, info: ConnectInfo) -> Identity | AuthRejected: ...


@dataclass(frozen=True)
class PasswordAuthenticator:
    """Username + password against a Mosquitto-format password file; the role comes from the ACL."""

    users: Mapping[str, str]
    acl: Acl

    def authenticate(self, info: ConnectInfo) -> Identity | AuthRejected:
        if not info.username:
            return AuthRejected("no username given; this broker requires credentials")
        encoded = self.users.get(info.username)
        if encoded is None or info.password is None or not verify_password(info.password, encoded):
            return AuthRejected(f"bad username or password for {info.username!r}")
        return self.acl.identity(info.username)


@dataclass(frozen=True)
class CertAuthenticator:
    """Mutual TLS: the verified client certificate *is* the identity (Mosquitto: `use_identity_as_username`).

    `revoked` is consulted on every connect (serial numbers; reloaded by the caller when its file changes);
    with `fallback` set, clients without a certificate may still log in with a password (migration only).
    """

    acl: Acl
    revoked: Callable[[], frozenset[int]] = frozenset
    fallback: PasswordAuthenticator | None = None

    def authenticate(self, info: ConnectInfo) -> Identity | AuthRejected:
        if info.cert is None:
            if self.fallback is not None:
                return self.fallback.authenticate(info)
            return AuthRejected("no client certificate: this broker requires mutual TLS (enrol the device first)")
        cert = info.cert
        if not cert.common_name:
            return AuthRejected("client certificate has no common name")
        if cert.serial in self.revoked():
            return AuthRejected(f"certificate {cert.serial:x} of {cert.common_name!r} is revoked")
        identity = self.acl.identity(cert.common_name)
        if cert.unit != identity.role.value:
            return AuthRejected(f"certificate of {cert.common_name!r} is for role {cert.unit!r}, but the broker knows "
                                f"that name as {identity.role.value!r}")
        return identity


class RevocationList:
    """Revoked serials from a file (one hex serial per line, `#` comments), re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[float, int] | None = None
        self._serials: frozenset[int] = frozenset()

    def __call__(self) -> frozenset[int]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return frozenset()
        stamp = (st.st_mtime, st.st_size)
        if stamp != self._stamp:
            serials = set()
            for line in self.path.read_text().splitlines():
                word = line.split("#", 1)[0].strip()
                if word:
                    try:
                        serials.add(int(word, 16))
                    except ValueError:
                        continue  # a damaged line must not un-revoke the others
            self._serials, self._stamp = frozenset(serials), stamp
        return self._serials


@dataclass(frozen=True)
class AnonymousAuthenticator:
    """Development only: everyone is let in with one role (the CLI prints a warning when this is used)."""

    role: Role = Role.COORDINATOR

    def authenticate(self, info: ConnectInfo) -> Identity | AuthRejected:
        return Identity(info.username or info.client_id or "anonymous", self.role)


@dataclass(frozen=True)
class AuthFiles:
    """The broker's auth directory: `passwd` (mosquitto_passwd format) and `roles.toml` (`[users]` name=role)."""

    users: Mapping[str, str]
    acl: Acl

    @classmethod
    def load(cls, directory: Path, *, require_passwords: bool = True) -> AuthFiles:
        """`require_passwords=False` for certificate authentication, where only roles.toml matters."""
        passwd = directory / PASSWD_FILE
        roles = directory / ROLES_FILE
        try:
            users = parse_password_file(passwd.read_text(), source=str(passwd))
        except FileNotFoundError:
            if require_passwords:
                raise BrokerConfigError(f"{passwd} is missing; create it with `cloudless broker passwd`") from None
            users = {}
        user_roles: dict[str, Role] = {}
        if roles.exists():
            try:
                data = tomllib.loads(roles.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise BrokerConfigError(f"{roles}: {exc}") from None
            table = data.get("users", {})
            if not isinstance(table, dict):
                raise BrokerConfigError(f"{roles}: [users] must be a table of username = role")
            for name, role in table.items():
                try:
                    user_roles[name] = Role(role)
                except ValueError:
                    raise BrokerConfigError(
                        f"{roles}: users.{name}: unknown role {role!r} (one of {[r.value for r in Role]})"
                    ) from None
        return cls(users=users, acl=Acl(user_roles=user_roles))

    def authenticator(self) -> PasswordAuthenticator:
        return PasswordAuthenticator(self.users, self.acl)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        write_private(directory / PASSWD_FILE, render_password_file(self.users))
        lines = ["# username = role (coordinator | dashboard); every other user is a node", "[users]"]
        lines += [f'"{name}" = "{role.value}"' for name, role in sorted(self.acl.user_roles.items())]
        write_private(directory / ROLES_FILE, "\n".join(lines) + "\n")


"""Pluggable broker authentication: who is connecting, as an `Identity` or a rejection value.

An `Authenticator` sees the CONNECT facts (`ConnectInfo`) and answers `Identity` or `AuthRejected(reason)`.
Implementations here: password file (Mosquitto `$7$` format, shared with the production broker) and an
explicit anonymous mode for development. The security issue adds certificate identities behind the same port.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from broker.acl import Acl, Identity, Role
from broker.errors import BrokerConfigError
from broker.passwords import parse_password_file, render_password_file, verify_password

PASSWD_FILE = "passwd"  # noqa: S105 - a file name, not a password
ROLES_FILE = "roles.toml"


@dataclass(frozen=True, slots=True)
class ConnectInfo:
    client_id: str
    username: str | None
    password: str | None


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
    def load(cls, directory: Path) -> AuthFiles:
        passwd = directory / PASSWD_FILE
        roles = directory / ROLES_FILE
        try:
            users = parse_password_file(passwd.read_text(), source=str(passwd))
        except FileNotFoundError:
            raise BrokerConfigError(f"{passwd} is missing; create it with `cloudless broker passwd`") from None
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
        _write_private(directory / PASSWD_FILE, render_password_file(self.users))
        lines = ["# username = role (coordinator | dashboard); every other user is a node", "[users]"]
        lines += [f'"{name}" = "{role.value}"' for name, role in sorted(self.acl.user_roles.items())]
        _write_private(directory / ROLES_FILE, "\n".join(lines) + "\n")


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.touch(mode=0o600, exist_ok=True)
    tmp.chmod(0o600)
    tmp.write_text(text)
    tmp.replace(path)

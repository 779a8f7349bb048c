"""Finding and reading profile files: the built-ins shipped as package data, plus an optional override directory.

Built-in profiles live in `firmware_profiles/profiles/<name>.toml` and are read through `importlib.resources`
(works from a source tree, an editable install, a wheel or a zip). They never change while the process runs,
so each is parsed once and cached. An override directory (conventionally `/etc/cloudless/profiles`, passed in
explicitly: this module reads no configuration) may add profiles or replace a built-in of the same name
wholesale; its files are re-read on every call so an operator's edit takes effect without a restart.
"""

from __future__ import annotations

import functools
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from firmware_profiles.errors import ProfileError, UnknownProfile
from firmware_profiles.model import Profile
from firmware_profiles.schema import NAME_PATTERN, parse_profile

DEFAULT_OVERRIDE_DIR = Path("/etc/cloudless/profiles")
SUFFIX = ".toml"
MAX_FILE_BYTES = 64 * 1024  # a profile is ~1 KiB; anything this big is not one


def _builtin_dir() -> Traversable:
    return resources.files("firmware_profiles").joinpath("profiles")


def _decode(data: bytes, source: str) -> str:
    if len(data) > MAX_FILE_BYTES:
        raise ProfileError(f"file too large ({len(data)} bytes, at most {MAX_FILE_BYTES})", file=source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(f"not UTF-8: {exc}", file=source) from None


def _stem(file_name: str, source: str) -> str:
    stem = file_name.removesuffix(SUFFIX)
    if not file_name.endswith(SUFFIX) or not NAME_PATTERN.fullmatch(stem):
        raise ProfileError(
            "file name must be <name>.toml with a name of lower-case letters, digits and '-' (at most 64)",
            file=source,
        )
    return stem


@functools.cache
def builtin_names() -> tuple[str, ...]:
    """Names of the profiles shipped with the package, sorted."""
    try:
        entries = list(_builtin_dir().iterdir())
    except OSError as exc:  # the package data was not installed: a packaging bug, but say so clearly
        raise ProfileError(
            f"cannot list built-in profiles: {exc.strerror or exc}", file="firmware_profiles/profiles"
        ) from None
    return tuple(
        sorted(
            entry.name.removesuffix(SUFFIX)
            for entry in entries
            if entry.is_file() and entry.name.endswith(SUFFIX) and not entry.name.startswith(".")
        )
    )


@functools.cache
def _load_builtin(name: str) -> Profile:
    source = f"{name}{SUFFIX}"
    try:
        data = _builtin_dir().joinpath(source).read_bytes()
    except OSError as exc:
        raise ProfileError(f"cannot read built-in profile: {exc.strerror or exc}", file=source) from None
    return parse_profile(_decode(data, source), name=name, source=source)


def load_file(path: str | Path) -> Profile:
    """Parse one profile file; its name is the file name without `.toml`. Errors name the path as given."""
    path = Path(path)
    source = str(path)
    name = _stem(path.name, source)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ProfileError(f"cannot read: {exc.strerror or exc}", file=source) from None
    return parse_profile(_decode(data, source), name=name, source=source)


def _override_files(extra_dir: str | Path | None) -> dict[str, Path]:
    """name -> path of every profile in `extra_dir`; a missing directory has none. Dotfiles are skipped."""
    if extra_dir is None:
        return {}
    directory = Path(extra_dir)
    try:
        entries = sorted(directory.iterdir()) if directory.is_dir() else []
    except OSError as exc:
        raise ProfileError(f"cannot list directory: {exc.strerror or exc}", file=str(directory)) from None
    found: dict[str, Path] = {}
    for entry in entries:
        if entry.name.startswith(".") or not entry.name.endswith(SUFFIX):
            continue
        found[_stem(entry.name, str(entry))] = entry
    return found


def available(*, extra_dir: str | Path | None = None) -> list[str]:
    """Sorted names of all loadable profiles: the built-ins plus those in `extra_dir` (if given and present)."""
    return sorted(set(builtin_names()) | set(_override_files(extra_dir)))


def load_profile(name: str, *, extra_dir: str | Path | None = None) -> Profile:
    """The profile `name`, from `extra_dir` if it has one by that name, else the (cached) built-in."""
    overrides = _override_files(extra_dir)
    # The pattern check also keeps '../x' and 'a/b' away from the file system.
    if NAME_PATTERN.fullmatch(name):
        if name in overrides:
            return load_file(overrides[name])
        if name in builtin_names():
            return _load_builtin(name)
    raise UnknownProfile(name, tuple(sorted(set(builtin_names()) | set(overrides))))


def load_all(*, extra_dir: str | Path | None = None) -> tuple[Profile, ...]:
    """Every available profile (overrides replacing built-ins of the same name), sorted by name."""
    overrides = _override_files(extra_dir)
    names = sorted(set(builtin_names()) | set(overrides))
    return tuple(load_file(overrides[name]) if name in overrides else _load_builtin(name) for name in names)

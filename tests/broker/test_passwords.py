"""Mosquitto-compatible `$7$` password hashes and password files (broker/passwords.py)."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.errors import BrokerConfigError
from broker.passwords import (
    DEFAULT_ITERATIONS,
    check_username,
    hash_password,
    parse_password_file,
    render_password_file,
    verify_password,
)
from tests.broker.strategies import TEXT_CHARS

# Made with Mosquitto 2.0.11: `mosquitto_passwd -b pw.txt node-1 'correct horse'` (and coordinator@main 's3cr3t!').
MOSQUITTO_FILE = """\
node-1:$7$101$/xpVqNK9FxgWzcEv$t1RALD+q+sp0Zl58omJQJEdFbJZmbNY2eqpj8hWw6EragO654ikjhzCg+O6hXPswWfUvRTX+FBxvNpOXTX/5lQ==
coordinator@main:$7$101$I/kp5IzpBtuVZJ7w$kQE6XQpaJJ82yY5gqvEs2j36MqA2GWFzzOmvMKaZibhvxpnxwMp6f9K9ZbeU1YogMgPW5lvrayARLg6r+9a6Ew==
"""
MOSQUITTO_NODE_1 = MOSQUITTO_FILE.splitlines()[0].partition(":")[2]

FAST = 50  # iterations for tests that do not care about cost


def test_verifies_hashes_made_by_mosquitto_passwd() -> None:
    users = parse_password_file(MOSQUITTO_FILE)
    assert verify_password("correct horse", users["node-1"])
    assert verify_password("s3cr3t!", users["coordinator@main"])
    assert not verify_password("correct horse ", users["node-1"])
    assert not verify_password("s3cr3t!", users["node-1"])


def test_hashes_exactly_like_mosquitto_passwd_given_its_salt() -> None:
    _, _, iterations, salt, _ = MOSQUITTO_NODE_1.split("$")
    assert hash_password("correct horse", salt=base64.b64decode(salt), iterations=int(iterations)) == MOSQUITTO_NODE_1


def test_default_hash_has_the_mosquitto_shape() -> None:
    encoded = hash_password("pw")
    # 12-byte salt and 64-byte SHA-512 digest, standard base64 with padding, like mosquitto_passwd
    assert re.fullmatch(rf"\$7\${DEFAULT_ITERATIONS}\$[A-Za-z0-9+/]{{16}}\$[A-Za-z0-9+/]{{86}}==", encoded)
    assert verify_password("pw", encoded)


def test_salts_are_random_and_hashes_deterministic_given_the_salt() -> None:
    assert hash_password("pw", iterations=FAST) != hash_password("pw", iterations=FAST)
    salt = b"\x00" * 12
    assert hash_password("pw", salt=salt, iterations=FAST) == hash_password("pw", salt=salt, iterations=FAST)


@settings(max_examples=50, deadline=None)
@given(password=st.text(TEXT_CHARS, max_size=64), other=st.text(TEXT_CHARS, max_size=64),
       salt=st.binary(min_size=1, max_size=16), iterations=st.integers(1, FAST))
def test_round_trip_and_wrong_password(password: str, other: str, salt: bytes, iterations: int) -> None:
    encoded = hash_password(password, salt=salt, iterations=iterations)
    assert verify_password(password, encoded)
    assert verify_password(other, encoded) is (other == password)


GOOD = hash_password("pw", salt=b"saltsaltsalt", iterations=FAST)
_, _, _, GOOD_SALT, GOOD_HASH = GOOD.split("$")

MALFORMED = {
    "empty": "",
    "plain-text": "pw",
    "other-scheme": f"$6${FAST}${GOOD_SALT}${GOOD_HASH}",
    "too-few-fields": f"$7${FAST}${GOOD_SALT}",
    "too-many-fields": f"{GOOD}$extra",
    "no-leading-dollar": f"7${FAST}${GOOD_SALT}${GOOD_HASH}$",
    "iterations-not-a-number": f"$7$many${GOOD_SALT}${GOOD_HASH}",
    "iterations-empty": f"$7$${GOOD_SALT}${GOOD_HASH}",
    "iterations-zero": f"$7$0${GOOD_SALT}${GOOD_HASH}",
    "iterations-negative": f"$7$-5${GOOD_SALT}${GOOD_HASH}",
    "iterations-too-many": f"$7$10000001${GOOD_SALT}${GOOD_HASH}",
    "salt-not-base64": f"$7${FAST}$!!!!${GOOD_HASH}",
    "hash-not-base64": f"$7${FAST}${GOOD_SALT}$%%%%",
    "hash-bad-padding": f"$7${FAST}${GOOD_SALT}${GOOD_HASH.rstrip('=')}",
    "non-ascii": f"$7${FAST}${GOOD_SALT}${GOOD_HASH[:-4]}ü===",
    "hash-of-another-password": hash_password("other", salt=b"saltsaltsalt", iterations=FAST),
}


@pytest.mark.parametrize("encoded", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_or_mismatching_encodings_return_false(encoded: str) -> None:
    assert verify_password("pw", encoded) is False


def test_empty_hash_field_returns_false() -> None:
    assert verify_password("pw", f"$7${FAST}${GOOD_SALT}$") is False


def test_hash_longer_than_the_sha512_digest_returns_false() -> None:
    longer = base64.b64encode(base64.b64decode(GOOD_HASH) + b"\x00").decode()
    assert verify_password("pw", f"$7${FAST}${GOOD_SALT}${longer}") is False


def test_password_that_is_not_utf8_encodable_returns_false() -> None:
    assert verify_password("p\ud800", GOOD) is False


@pytest.mark.parametrize("keep", [44, 4], ids=["33-bytes", "3-bytes"])
def test_truncated_hash_is_refused_like_mosquitto_does(keep: int) -> None:
    """Checked against Mosquitto 2.0.11: with `trunc:<MOSQUITTO_NODE_1 with the hash cut to 44 chars>` in its
    password_file, `mosquitto_pub -u trunc -P 'correct horse'` is refused as not authorised."""
    salt_part, _, digest = MOSQUITTO_NODE_1.rpartition("$")
    assert verify_password("correct horse", f"{salt_part}${digest[:keep]}") is False


# ---- password files --------------------------------------------------------------------------------------------

def test_parse_skips_comments_and_blank_lines() -> None:
    text = f"# users\n\n  node-1:{GOOD}  \n\t\n# end\ncoordinator@main:{GOOD}\n"
    assert parse_password_file(text) == {"node-1": GOOD, "coordinator@main": GOOD}


@pytest.mark.parametrize(
    "bad_line",
    ["node-1", f":{GOOD}", "node-1:", "node-1:plaintext", f"node-1 {GOOD}", f"node-1:$6${GOOD[3:]}"],
    ids=["no-colon", "no-username", "no-hash", "plaintext", "space-not-colon", "other-scheme"],
)
def test_parse_errors_name_the_source_and_line(bad_line: str) -> None:
    text = f"# comment\n\nok:{GOOD}\n{bad_line}\nalso-ok:{GOOD}\n"
    with pytest.raises(BrokerConfigError, match=r"^/etc/cloudless/passwd:4: "):
        parse_password_file(text, source="/etc/cloudless/passwd")


def test_render_sorts_users_and_parses_back() -> None:
    users = {"node-b": GOOD, "coordinator@main": MOSQUITTO_NODE_1, "node-a": GOOD}
    text = render_password_file(users)
    assert text.splitlines() == [f"{name}:{users[name]}" for name in sorted(users)]
    assert parse_password_file(text) == users


@pytest.mark.parametrize("username", ["", "a:b", "a\nb", "a\rb", "a\x00b", "x" * 257], ids=repr)
def test_usernames_that_would_break_the_file_are_refused(username: str) -> None:
    with pytest.raises(BrokerConfigError):
        check_username(username)
    with pytest.raises(BrokerConfigError):
        render_password_file({username: GOOD})


@pytest.mark.parametrize("username", ["pi-1", "coordinator@main", "x" * 256, "ünïcode", "a b"], ids=repr)
def test_usable_usernames_are_accepted(username: str) -> None:
    check_username(username)

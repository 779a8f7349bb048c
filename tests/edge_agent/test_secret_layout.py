"""The pure secret layout (`edge_agent.secret_layout`): who owns the files, and which instances need new ones."""

from __future__ import annotations

import pytest

from broker import wire
from broker.wire import Security
from edge_agent.secret_layout import SecretChange, owner_of, secret_changes, versions_of
from tests.edge_agent.builders import make_instance, make_spec


@pytest.mark.parametrize(("security", "owner"), [
    (None, None), (Security(), None), (Security(run_as_user=0), None), (Security(run_as_user=1000), (1000, 1000)),
    (Security(run_as_user=1000, run_as_group=5), (1000, 5)),
], ids=["none", "image-user", "root", "user", "user-and-group"])
def test_owner_of(security: Security | None, owner: tuple[int, int] | None) -> None:
    assert owner_of(make_spec(security=security)) == owner


def box(version: int) -> wire.SealedSecret:
    return wire.SealedSecret(secret="db", version=version, box=b"x")


def spec_v(version: int, update: wire.SecretUpdate = wire.SecretUpdate.RESTART) -> wire.ReplicaSpec:
    return make_spec(secrets=(box(version),), secret_volumes=(wire.SecretVolume(secret="db", mount_path="/s"),),
                     secret_update=update)


def test_changes_replace_or_rewrite_as_the_spec_says() -> None:
    inst = make_instance()
    assert secret_changes([inst], {"web-0": spec_v(2)}, {"c-web-0": "db:2"}) == ()
    (change,) = secret_changes([inst], {"web-0": spec_v(2)}, {"c-web-0": "db:1"})
    assert change == SecretChange("c-web-0", spec_v(2), "db:1", "db:2", replace=True)
    (change,) = secret_changes([inst], {"web-0": spec_v(3, wire.SecretUpdate.FILES)}, {})
    assert (change.have, change.want, change.replace) == ("", versions_of(spec_v(3)), False)


def test_no_change_for_an_old_spec_or_no_secrets() -> None:
    assert secret_changes([make_instance(spec_hash="h0")], {"web-0": spec_v(2)}, {}) == ()
    assert secret_changes([make_instance()], {"web-0": make_spec()}, {}) == ()

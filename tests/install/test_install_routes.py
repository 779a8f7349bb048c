"""The install routes (coordinator/rest/install.py) served by a real aiohttp app, and the join command's pin.

The wheel build is real (`pip wheel --no-deps` of this repository into a temporary cache); the pin is checked
against openssl's own computation of the same SubjectPublicKeyInfo digest (curl's documented recipe).
"""

from __future__ import annotations

import datetime
import hashlib
import shlex
import subprocess
import zipfile
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from cloudless.admin_cli import join_command, spki_pin
from coordinator.rest import app as rest_app
from coordinator.rest.install import ROUTES, InstallHandlers, InstallPaths, source_hash, valid_wheel_name
from coordinator.rest.routes import bind

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("name", "ok"), [
    ("cloudless-0.1.0-py3-none-any.whl", True),
    ("cryptography-46.0.0-cp311-abi3-manylinux_2_28_armv7l.manylinux_2_31_armv7l.whl", True),
    ("psutil-7.2.2-cp36-abi3-manylinux2014_aarch64.whl", True),
    ("../etc-1.0-py3-none-any.whl", False),
    ("a/b-1.0-py3-none-any.whl", False),
    ("cloudless-0.1.0-py3-none-any.tar.gz", False),
    ("cloudless-0.1.0.whl", False),
    (".hidden-1..0-py3-none-any.whl", False),
], ids=["project", "manylinux-multi", "abi3", "dotdot", "slash", "not-a-wheel", "too-few-parts", "dots"])
def test_wheel_names_are_checked_strictly(name: str, ok: bool) -> None:
    assert valid_wheel_name(name) is ok


def test_source_hash_changes_with_the_source(tmp_path: Path) -> None:
    for pkg in ("broker", "cloudless", "coordinator", "dataplane", "edge_agent", "firmware_profiles"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    first = source_hash(tmp_path)
    assert source_hash(tmp_path) == first
    (tmp_path / "edge_agent" / "agent.py").write_text("x = 1\n")
    assert source_hash(tmp_path) != first


def test_the_routes_are_in_the_api_and_its_openapi_document() -> None:
    names = {r.handler for r in rest_app.ROUTES}
    assert {"install_script", "list_wheels", "get_wheel"} <= names
    paths = rest_app.openapi_document()["paths"]
    assert "/v1/install.sh" in paths and "/v1/install/wheels/{file}" in paths
    assert all(not r.auth for r in ROUTES)  # a device has nothing but a token before it installs


@pytest.mark.integration
async def test_script_and_wheels_are_served_with_their_hashes(tmp_path: Path) -> None:
    house = tmp_path / "wheelhouse"
    house.mkdir()
    dep = house / "paho_mqtt-2.2.0-py3-none-any.whl"
    dep.write_bytes(b"not really a wheel")
    (house / "junk.txt").write_text("never listed")
    handlers = InstallHandlers(InstallPaths(source=REPO, script=REPO / "scripts" / "install-agent.sh",
                                            cache=tmp_path / "wheels", wheelhouse=house))
    app = web.Application()
    for route, handler in bind(ROUTES, handlers):
        app.router.add_route(route.method, route.path, handler)
    async with TestClient(TestServer(app)) as client:
        script = await (await client.get("/v1/install.sh", headers={"Host": "198.18.0.10:8470"})).text()
        assert script.startswith("#!/bin/sh")
        assert 'SERVER="${CLOUDLESS_SERVER:-https://198.18.0.10:8470}"' in script
        listing = await client.get("/v1/install/wheels")
        assert listing.status == 200, await listing.text()
        lines = {name: digest for digest, name in (line.split("  ") for line in (await listing.text()).splitlines())}
        project = next(n for n in lines if n.startswith("cloudless-"))
        assert set(lines) == {project, dep.name}
        assert lines[dep.name] == hashlib.sha256(dep.read_bytes()).hexdigest()
        body = await (await client.get(f"/v1/install/wheels/{project}")).read()
        assert hashlib.sha256(body).hexdigest() == lines[project]
        (tmp_path / project).write_bytes(body)
        names = zipfile.ZipFile(tmp_path / project).namelist()
        assert "edge_agent/cli.py" in names and any(n.startswith("firmware_profiles/profiles/") for n in names)
        assert (await client.get("/v1/install/wheels/nothere-1.0-py3-none-any.whl")).status == 404
        assert (await client.get("/v1/install/wheels/..%2Fsecret.whl")).status in (400, 404)
        bad_host = await client.get("/v1/install.sh", headers={"Host": "evil.example;rm -rf /"})
        assert bad_host.status == 400
        # built once per source hash: a second handler finds it in the cache
        again = InstallHandlers(InstallPaths(source=REPO, cache=tmp_path / "wheels", wheelhouse=house))
        assert (await again._project_wheel()).read_bytes() == body


def test_pin_is_curls_sha256_of_the_subject_public_key_info(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "api")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    pem = tmp_path / "c.pem"
    pem.write_bytes(cert.public_bytes(Encoding.PEM))
    expected = subprocess.run(
        f"openssl x509 -in {pem} -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary "
        "| openssl enc -base64", shell=True, capture_output=True, text=True, check=True).stdout.strip()
    assert spki_pin(cert.public_bytes(Encoding.DER)) == f"sha256//{expected}"


def test_join_command_pins_the_script_download_and_passes_the_pin_on() -> None:
    line = join_command("https://198.18.0.10:8470/", "sha256//abc+/=", "tok-en", "pi-kitchen")
    fetch, run = line.split(" | ")
    assert shlex.split(fetch) == ["curl", "-fsSk", "--pinnedpubkey", "sha256//abc+/=",
                                  "https://198.18.0.10:8470/v1/install.sh"]
    assert shlex.split(run) == ["sh", "-s", "--", "--pin", "sha256//abc+/=", "--token", "tok-en",
                                "--node-id", "pi-kitchen"]
    assert "--node-id" not in join_command("https://h:1", "sha256//x", "t", None)


def test_join_command_with_several_urls_quotes_each_and_passes_the_same_args() -> None:
    line = join_command(["https://192.0.2.2:8470", "https://nas.lan:8470/"], "sha256//abc+/=", "tok", None)
    fetch, run = line.split(" | ")
    words = shlex.split(fetch)
    assert words[:2] == ["sh", "-c"] and words[3:] == ["sh", "https://192.0.2.2:8470/v1/install.sh",
                                                       "https://nas.lan:8470/v1/install.sh"]
    assert "--pinnedpubkey sha256//abc+/=" in words[2]
    assert shlex.split(run) == ["sh", "-s", "--", "--pin", "sha256//abc+/=", "--token", "tok"]


def test_the_token_urls_are_what_devices_fetch_from() -> None:
    from cloudless.admin_cli import token_urls
    from coordinator.enroll import TokenRecord, mint

    token = mint(b"k" * 64, TokenRecord("t", 1, expires_at=2e9), url=["https://192.0.2.2:1", "https://vm:1"],
                 ca_fingerprint="00", now=1e9)
    assert token_urls(token, "https://127.0.0.1:1") == ["https://192.0.2.2:1", "https://vm:1"]
    assert token_urls("not-a-token", "https://127.0.0.1:1") == ["https://127.0.0.1:1"]


@pytest.mark.integration
def test_the_printed_line_falls_through_a_dead_url_and_runs_the_script_of_the_live_one(tmp_path: Path) -> None:
    """The one-liner as a device's shell runs it: curl with the pin against a dead address, then a live HTTPS server
    on loopback whose script prints the arguments it got."""
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from coordinator.pki import CertificateAuthority, key_pem, new_key
    from tests.integration.conftest import require_binary

    require_binary("curl")
    ca, key = CertificateAuthority.create("t", datetime.datetime.now(datetime.UTC).timestamp()), new_key()
    cert = ca.issue_server(key, hosts=["127.0.0.1"], now=datetime.datetime.now(datetime.UTC).timestamp(),
                           lifetime_s=600)
    (tmp_path / "s.pem").write_bytes(cert.cert_pem)
    (tmp_path / "s.key").write_bytes(key_pem(key))
    script = b'#!/bin/sh\necho "script ran with: $*"\n'

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/v1/install.sh" else 404)
            self.send_header("Content-Length", str(len(script)))
            self.end_headers()
            self.wfile.write(script)

    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(tmp_path / "s.pem"), str(tmp_path / "s.key"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"https://127.0.0.1:{s.getsockname()[1]}"  # nobody listens there once closed
    live = f"https://127.0.0.1:{server.server_address[1]}"
    pin = spki_pin(x509.load_pem_x509_certificate(cert.cert_pem).public_bytes(Encoding.DER))
    try:
        ran = subprocess.run(["bash", "-c", join_command([dead, live], pin, "tok", "pi-1")], capture_output=True,
                             text=True, timeout=60, check=False)
        assert ran.stdout.strip() == f"script ran with: --pin {pin} --token tok --node-id pi-1", ran.stderr
        assert f"{dead}/v1/install.sh failed" in ran.stderr and "Failed to connect" in ran.stderr
        # a wrong pin: no address serves the script, each failure is said
        wrong = subprocess.run(["bash", "-c", join_command([dead, live], "sha256//AAAA", "tok", None)],
                               capture_output=True, text=True, timeout=60, check=False)
        assert "script ran" not in wrong.stdout and f"{live}/v1/install.sh failed" in wrong.stderr
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("node_id", ["a;rm -rf ~", "-x", "pi 1", "$(id)", "x" * 64])
def test_the_install_script_refuses_a_node_id_that_could_not_be_one(node_id: str, tmp_path: Path) -> None:
    """The id goes into a unit file and a supervisor script: it is checked before anything is written."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "install-agent.sh"
    r = subprocess.run(["sh", str(script), "--server", "https://127.0.0.1:1", "--pin", "sha256//x", "--token", "t",
                        "--node-id", node_id], capture_output=True, text=True, timeout=30,
                       env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}, check=False)
    assert r.returncode != 0 and "node id" in r.stderr and "--node-id NAME" in r.stderr, r.stderr
    assert not any(tmp_path.iterdir())  # nothing installed

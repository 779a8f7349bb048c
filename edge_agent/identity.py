"""The node's identity (adapter): enrolment with a join token, the key that never leaves the device, renewal.

Enrolment (ARCHITECTURE §6). The token is a signed JWT the agent cannot verify (it has no secret), so it only
reads two things from it: where to enrol (`urls`: every address the coordinator is advertised at; a token from
before that claim has one `url`) and the SHA-256 fingerprint of the cluster CA (`ca`). It tries the URLs in order
(a laptop's Wi-Fi address, its wired one, its host name ...): each one that fails is reported with its reason on
stderr and the next is tried; the first that answers with the pinned CA is used. It fetches the CA certificate
from that URL without trusting the connection, accepts it only if the fingerprint
matches (a man in the middle cannot forge a CA with the pinned fingerprint), and from then on talks TLS verified
against that CA: it sends the token and a CSR for a key pair it made itself (the private key never leaves the
device) and gets back its node certificate. HTTPS was chosen over an anonymous MQTT topic because the broker
then never admits a client without a certificate (no anonymous listener to harden), and the pinned-CA exchange
is the well-trodden kubeadm join pattern.

Files, in DATA_DIR/identity/ (the directory 0700, the key 0600): node.key, node.pem, ca.pem, enrolment.json
(API URL that worked, every API URL of the token, broker URL, validity). The broker URL the coordinator answers
with names one of its advertised addresses; when that address is one of the token's and the device reached the
coordinator at another one, the device dials the broker at the address that worked (same machine, reachable
from here). Renewal happens at 2/3 of the certificate's lifetime over mutual TLS with the current certificate,
at the API URL that worked last, then the others; a node offline past expiry must re-enrol with a new token
(`--token`), and says so.

The running agent enrols and renews through `enrol_isolated` / `renew_isolated`: the same exchange in a
short-lived child process (`python -m edge_agent.identity`). It needs `cryptography` for seconds, once a month or
so, and its Rust extension would otherwise stay in the agent's memory for good (about 7 MiB on a device whose
whole agent is 35: docs/benchmarks.md).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from edge_agent.atomic import atomic_write
from edge_agent.errors import AgentError

log = logging.getLogger(__name__)

DIR = "identity"
KEY, CERT, CA, META = "node.key", "node.pem", "ca.pem", "enrolment.json"
RENEW_AT = 2 / 3
TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 10.0  # per enrolment URL while there are others to try: a dead address must not eat the budget
MAX_URLS = 16


class EnrolmentError(AgentError):
    """Enrolment or renewal failed; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    directory: Path
    node_id: str
    api_url: str
    broker_url: str
    not_before: float
    not_after: float
    labels: tuple[tuple[str, str], ...] = ()  # given by the enrolment token (the command line adds to them)
    zone: str = ""
    api_urls: tuple[str, ...] = ()  # every API URL the token named, the one that worked first

    @property
    def key(self) -> Path:
        return self.directory / KEY

    @property
    def cert(self) -> Path:
        return self.directory / CERT

    @property
    def ca(self) -> Path:
        return self.directory / CA

    def renew_due(self, now: float) -> bool:
        return now >= self.not_before + RENEW_AT * (self.not_after - self.not_before)

    def expired(self, now: float) -> bool:
        return now >= self.not_after


def token_claims(token: str) -> dict[str, Any]:
    """The JWT payload, unverified (see the module docstring for why that is safe here), with `urls` always set:
    the token's list, or its single `url` (tokens minted before the list existed)."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as exc:
        raise EnrolmentError(f"--token: not a Cloudless enrolment token ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("ca"), str):
        raise EnrolmentError("--token: no enrolment URL or CA pin in it; mint one with `cloudless token create`")
    raw = data.get("urls")
    if raw is None:
        raw = [data["url"]] if isinstance(data.get("url"), str) else []
    if not isinstance(raw, list) or not raw or not all(isinstance(u, str) for u in raw):
        raise EnrolmentError("--token: no enrolment URL or CA pin in it; mint one with `cloudless token create`")
    for u in raw:
        if not u.startswith("https://"):
            raise EnrolmentError(f"--token: enrolment URL {u[:80]!r} is not https://")
    data["urls"] = list(dict.fromkeys(u.rstrip("/") for u in raw))[:MAX_URLS]
    return data


def broker_for(broker_url: str, urls: list[str], used: str) -> str:
    """The broker URL a device dials: the coordinator's answer, with its host replaced by the host the device
    reached the coordinator at when the answer names another of the token's hosts (the same machine, advertised
    at several addresses; the one that worked is the one reachable from here). A broker elsewhere is kept."""
    parts, at = urlsplit(broker_url), urlsplit(used)
    hosts = {urlsplit(u).hostname for u in urls}
    if not parts.hostname or not at.hostname or parts.hostname == at.hostname or parts.hostname not in hosts:
        return broker_url
    host = f"[{at.hostname}]" if ":" in at.hostname else at.hostname
    return urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))


def load(data_dir: Path) -> NodeIdentity | None:
    d = data_dir / DIR
    try:
        meta = json.loads((d / META).read_text())
        if not (d / KEY).exists() or not (d / CERT).exists():
            return None
        labels = tuple((str(k), str(v)) for k, v in dict(meta.get("labels", {})).items())
        urls = tuple(str(u) for u in meta.get("api_urls") or [meta["api_url"]])
        return NodeIdentity(d, str(meta["node_id"]), str(meta["api_url"]), str(meta["broker_url"]),
                            float(meta["not_before"]), float(meta["not_after"]), labels, str(meta.get("zone", "")),
                            urls)
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise EnrolmentError(f"{d / META} is damaged ({exc}); re-enrol with --token") from None


def private_key(data_dir: Path) -> object | None:
    """The node's private key (DATA_DIR/identity/node.key, re-read each time: a renewal replaces it), or None.
    Loads cryptography (through broker.sealed) only when called: the agent needs it to open a secret."""
    from broker import sealed

    try:
        return sealed.private_key_from_pem((data_dir / DIR / KEY).read_bytes())
    except (OSError, sealed.SealedError):
        return None


def enrol(data_dir: Path, node_id: str, token: str) -> NodeIdentity:
    """Blocking (call from a thread): the whole enrolment exchange; raises EnrolmentError with the reason."""
    claims = token_claims(token)
    urls: list[str] = claims["urls"]
    d = data_dir / DIR
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    failures: list[str] = []
    for i, url in enumerate(urls):
        last = i == len(urls) - 1
        try:
            ca_pem = _fetch_ca(url, claims["ca"], timeout=TIMEOUT_S if last else PROBE_TIMEOUT_S)
            atomic_write(d / CA, ca_pem, 0o644)
            key_pem, csr_pem = _key_and_csr(d / KEY, node_id)
            ctx = ssl.create_default_context(cafile=str(d / CA))
            reply = _post(f"{url}/v1/enroll", {"token": token, "nodeId": node_id, "csr": csr_pem.decode()}, ctx)
        except Unreachable as exc:
            failures.append(f"{url}: {exc}")
            _tell(f"enrolment at {url} failed: {exc}" + ("" if last else f"; trying {urls[i + 1]}"))
            continue
        if failures:
            _tell(f"enrolled at {url} (after {len(failures)} URL(s) that failed)")
        reply = {**reply, "ca": None, "broker": broker_for(str(reply.get("broker") or ""), urls, url)}
        ordered = (url, *(u for u in urls if u != url))
        return _save(d, node_id, url, reply, key_pem, api_urls=ordered)  # the CA is the pinned one, never the reply's
    if len(urls) == 1:
        raise EnrolmentError(f"cannot enrol at {failures[0]}; check the network, or ask for a token with the right "
                             "URL (`cloudless up --advertise`)")
    raise EnrolmentError(f"cannot enrol at any of the token's {len(urls)} URLs: {'; '.join(failures)}; check the "
                         "network, or ask for a token with the right URLs (`cloudless up --advertise`)")


class Unreachable(EnrolmentError):
    """This URL did not work (network, TLS, a server without the pinned CA): another of the token's may."""


def _tell(line: str) -> None:
    """A progress line on stderr: the enrolment child's parent logs these (see `_run_child`)."""
    print(f"{NOTE}{line}", file=sys.stderr, flush=True)


NOTE = "cloudless-enrol: "


def renew(identity: NodeIdentity) -> NodeIdentity:
    """Blocking: a new certificate for a new key, authenticated with the current certificate (mutual TLS)."""
    ctx = ssl.create_default_context(cafile=str(identity.ca))
    ctx.load_cert_chain(str(identity.cert), str(identity.key))
    new_key = identity.directory / (KEY + ".new")
    key_pem, csr_pem = _key_and_csr(new_key, identity.node_id, fresh=True)
    urls = list(dict.fromkeys((identity.api_url, *identity.api_urls)))
    failures: list[str] = []
    for url in urls:
        try:
            reply = _post(f"{url}/v1/renew", {"csr": csr_pem.decode()}, ctx)
        except Unreachable as exc:
            failures.append(f"{url}: {exc}")
            continue
        _check_pair(reply.get("certificate", ""), new_key)
        new_key.replace(identity.key)
        return _save(identity.directory, identity.node_id, url,
                     {**reply, "broker": identity.broker_url, "ca": None, "labels": dict(identity.labels),
                      "zone": identity.zone}, key_pem, api_urls=(url, *(u for u in urls if u != url)))
    raise EnrolmentError(f"cannot renew: no API URL answered ({'; '.join(failures)})")


def _check_pair(cert_pem: object, key_path: Path) -> None:
    """The certificate the coordinator returned must be for the key we just made (else keep the old pair)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(str(cert_pem).encode())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, OSError) as exc:
        raise EnrolmentError(f"renewal returned an unusable certificate ({exc}); keeping the current one") from None
    if cert.public_key() != key.public_key():
        raise EnrolmentError("renewal returned a certificate for another key; keeping the current one")


def _fetch_ca(url: str, pinned: str, *, timeout: float = TIMEOUT_S) -> bytes:
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # deliberately: what we get is checked against the pinned fingerprint
    try:
        with urllib.request.urlopen(f"{url}/v1/ca", timeout=timeout, context=insecure) as resp:  # noqa: S310
            pem: bytes = resp.read(65536)
    except (urllib.error.URLError, OSError) as exc:
        raise Unreachable(f"cannot reach the coordinator ({_reason(exc)})") from None
    try:
        return _pinned_ca(pem, pinned, f"{url}/v1/ca")
    except EnrolmentError as exc:  # another machine at that address (or an impersonator): try the next URL
        raise Unreachable(str(exc)) from None


def _reason(exc: BaseException) -> str:
    """What went wrong in a few words: urllib wraps the socket error (refused, timed out, no such host)."""
    inner = getattr(exc, "reason", exc)
    return str(inner) or type(inner).__name__


def _pinned_ca(pem: bytes, pinned: str, where: str) -> bytes:
    """Exactly one certificate whose SHA-256 is the pin; returned re-encoded (nothing else in `pem` survives:
    a second certificate appended after the genuine one must not ride along into the trust store)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise EnrolmentError(f"{where} did not return a PEM certificate") from None
    if len(certs) != 1:
        raise EnrolmentError(f"{where} returned {len(certs)} certificates; expected exactly the cluster CA")
    if certs[0].fingerprint(hashes.SHA256()).hex() != pinned.lower():
        raise EnrolmentError(f"the server at {where} does not hold the cluster CA pinned in the token: wrong URL, or "
                             "someone is impersonating the coordinator. Nothing was sent.")
    return certs[0].public_bytes(serialization.Encoding.PEM)


def _key_and_csr(path: Path, node_id: str, *, fresh: bool = False) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    if path.exists() and not fresh:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise EnrolmentError(f"{path}: not an ECDSA key; delete it to make a new one")
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    atomic_write(path, key_pem, 0o600)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
           .sign(key, hashes.SHA256()))
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def _post(url: str, body: dict[str, str], ctx: ssl.SSLContext) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",  # noqa: S310 - https only
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S, context=ctx) as resp:  # noqa: S310
            data = json.loads(resp.read(1024 * 1024))
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read(65536))["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        if exc.code >= 500:  # a proxy's 502, a coordinator without a leader: another URL may answer
            raise Unreachable(f"{url} answered {exc.code}: {message}") from None
        raise EnrolmentError(f"the coordinator refused: {message}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise Unreachable(f"cannot talk to the coordinator at {url}: {_reason(exc)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("certificate"), str):
        raise EnrolmentError(f"{url}: unexpected answer (no certificate)")
    return data


def _save(d: Path, node_id: str, api_url: str, reply: dict[str, Any], key_pem: bytes, *,
          api_urls: tuple[str, ...] = ()) -> NodeIdentity:
    from cryptography import x509

    cert_pem = reply["certificate"].encode()
    cert = x509.load_pem_x509_certificate(cert_pem)
    atomic_write(d / CERT, cert_pem, 0o644)
    if isinstance(reply.get("ca"), str):
        atomic_write(d / CA, reply["ca"].encode(), 0o644)
    raw_labels = reply.get("labels")
    labels: dict[str, Any] = raw_labels if isinstance(raw_labels, dict) else {}
    identity = NodeIdentity(d, node_id, api_url, str(reply.get("broker") or ""),
                            cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp(),
                            tuple((str(k)[:128], str(v)[:128]) for k, v in list(labels.items())[:64]),
                            str(reply.get("zone") or "")[:64], api_urls or (api_url,))
    meta = {"node_id": node_id, "api_url": api_url, "api_urls": list(identity.api_urls),
            "broker_url": identity.broker_url,
            "not_before": identity.not_before, "not_after": identity.not_after, "labels": dict(identity.labels),
            "zone": identity.zone}
    atomic_write(d / META, json.dumps(meta).encode(), 0o600)
    del key_pem
    return identity


# ---- in a child process ---------------------------------------------------------------------------------------

CHILD_TIMEOUT_S = 4 * TIMEOUT_S  # its requests are bounded by TIMEOUT_S each (PROBE_TIMEOUT_S per extra URL)


def enrol_isolated(data_dir: Path, node_id: str, token: str) -> NodeIdentity:
    """`enrol` in a child process (blocking): the agent itself never imports cryptography for it. The token goes
    through the child's stdin, never its command line (which other local users can read)."""
    try:
        extra = len(token_claims(token)["urls"]) - 1
    except EnrolmentError:
        extra = 0  # the child says what is wrong with it
    _run_child(["enrol", str(data_dir), node_id], token, timeout=CHILD_TIMEOUT_S + extra * 2 * PROBE_TIMEOUT_S)
    return _loaded(data_dir)


def renew_isolated(identity: NodeIdentity) -> NodeIdentity:
    """`renew` in a child process (blocking)."""
    extra = max(0, len(identity.api_urls) - 1)
    _run_child(["renew", str(identity.directory.parent)], "", timeout=CHILD_TIMEOUT_S + extra * TIMEOUT_S)
    return _loaded(identity.directory.parent)


def _loaded(data_dir: Path) -> NodeIdentity:
    identity = load(data_dir)
    if identity is None:
        raise EnrolmentError(f"{data_dir / DIR} holds no complete identity after the exchange; enrol again with "
                             "--token")
    return identity


def _run_child(args: list[str], stdin: str, *, timeout: float = CHILD_TIMEOUT_S) -> None:
    # -P: nothing from the working directory is importable (it could hold another `edge_agent`, and the child
    # gets the token); edge_agent comes from where this module was loaded, after any PYTHONPATH the agent had
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), root) if p)}
    try:
        proc = subprocess.run([sys.executable, "-P", "-m", "edge_agent.identity", *args], input=stdin, env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise EnrolmentError(f"the {args[0]} exchange took over {timeout:.0f}s; check the network to the "
                             "coordinator") from None
    except OSError as exc:
        raise EnrolmentError(f"cannot start {sys.executable} for the {args[0]} exchange: {exc}") from None
    for line in proc.stderr.splitlines():  # which URL failed and why, also when another one then worked
        if line.startswith(NOTE):
            log.warning("%s", line[len(NOTE):])
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise EnrolmentError(lines[-1] if lines else f"the {args[0]} exchange failed (exit {proc.returncode})")


def main(argv: list[str]) -> int:
    """The child: `enrol DATA_DIR NODE_ID` (the token on stdin) or `renew DATA_DIR`; the reason on stderr."""
    try:
        if len(argv) == 3 and argv[0] == "enrol":
            enrol(Path(argv[1]), argv[2], sys.stdin.read().strip())
        elif len(argv) == 2 and argv[0] == "renew":
            current = load(Path(argv[1]))
            if current is None:
                raise EnrolmentError(f"no identity in {Path(argv[1]) / DIR} to renew; enrol with --token")
            renew(current)
        else:
            print("usage: python -m edge_agent.identity enrol DATA_DIR NODE_ID < TOKEN | renew DATA_DIR",
                  file=sys.stderr)
            return 2
    except EnrolmentError as exc:
        print(" ".join(str(exc).split()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""The service resolver's codec: strict parsing (bad packets are values), A/SRV/NXDOMAIN/NODATA answers for service
names in every accepted form and case, forwarding for everything else, truncation past the reply size."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.wire import Protocol, ServiceEndpoint, ServicePort, ServiceRecord
from dataplane.dns import A_TTL, Forward, Malformed, Query, RCode, Reply, parse_query, resolve, servfail, vip_problem
from tests.dataplane import dnspackets as dp

WEB = ServiceRecord(name="web", namespace="default", vip="127.10.0.5",
                    ports=(ServicePort(port=8080, target_port=80, name="http"),
                           ServicePort(port=8443, target_port=443, name="https"),
                           ServicePort(port=5353, target_port=53, name="dns", protocol=Protocol.UDP)),
                    endpoints=(ServiceEndpoint(node="laptop", replica="web-1"),))
DB = ServiceRecord(name="db", namespace="default", vip="127.10.0.6",
                   ports=(ServicePort(port=5432, target_port=5432, name="pg"),))  # no ready endpoint now
OTHER = ServiceRecord(name="cache", namespace="shop", vip="127.10.0.7",
                      ports=(ServicePort(port=6379, target_port=6379, name="redis"),),
                      endpoints=(ServiceEndpoint(node="vps", replica="cache-0"),))
SERVICES = (WEB, DB, OTHER)
A, AAAA, SRV, MX, ANY = 1, 28, 33, 15, 255


def ask(packet: bytes, *, namespace: str = "default", max_size: int | None = None) -> dp.Answer:
    query = parse_query(packet)
    assert isinstance(query, Query), query
    result = resolve(query, services=SERVICES, namespace=namespace, max_size=max_size)
    assert isinstance(result, Reply), result
    answer = dp.read(result.packet)
    assert answer.ident == 0x1234 and answer.flags & 0x8000 and answer.rcode == result.rcode
    return answer


@pytest.mark.parametrize("name", [
    "web.default.svc.cloudless", "web.default.svc.cloudless.", "WEB.Default.SVC.Cloudless", "web.default", "web",
], ids=["full", "trailing-dot", "mixed-case", "svc.ns", "svc"])
def test_a_service_name_answers_its_virtual_ip(name: str) -> None:
    answer = ask(dp.query(name, A))
    assert answer.rcode == RCode.NOERROR and answer.authoritative
    assert [(r.rtype, r.data, r.ttl) for r in answer.answers] == [(A, "127.10.0.5", A_TTL)]
    assert answer.question == name.rstrip(".")  # the client's own case comes back (0x20 randomisation survives)
    assert answer.answers[0].name == name.rstrip(".")


def test_a_service_without_ready_endpoints_still_resolves() -> None:
    assert [r.data for r in ask(dp.query("db.default.svc.cloudless")).answers] == ["127.10.0.6"]


def test_srv_names_the_port_and_the_service_with_its_address_alongside() -> None:
    answer = ask(dp.query("_http._tcp.web.default.svc.cloudless", SRV))
    assert answer.rcode == RCode.NOERROR
    assert [r.data for r in answer.answers] == [(0, 100, 8080, "web.default.svc.cloudless")]
    assert [(r.name, r.data) for r in answer.additional] == [("web.default.svc.cloudless", "127.10.0.5")]
    udp = ask(dp.query("_dns._udp.web.default.svc.cloudless", SRV))
    assert [r.data for r in udp.answers] == [(0, 100, 5353, "web.default.svc.cloudless")]
    short = ask(dp.query("_https._tcp.web", SRV))  # the search-domain form inside the namespace
    assert [r.data for r in short.answers] == [(0, 100, 8443, "web.default.svc.cloudless")]


@pytest.mark.parametrize(("name", "qtype", "rcode"), [
    ("_pg._tcp.db.default.svc.cloudless", SRV, RCode.NOERROR),  # no ready endpoint: no SRV record (yet)
    ("web.default.svc.cloudless", AAAA, RCode.NOERROR),
    ("web.default.svc.cloudless", MX, RCode.NOERROR),
    ("_http._tcp.web.default.svc.cloudless", A, RCode.NOERROR),
    ("default.svc.cloudless", A, RCode.NOERROR),  # the namespace exists as a name, it holds no address
    ("svc.cloudless", A, RCode.NOERROR),
    ("nope.default.svc.cloudless", A, RCode.NXDOMAIN),
    ("web.nowhere.svc.cloudless", A, RCode.NXDOMAIN),
    ("nowhere.svc.cloudless", A, RCode.NXDOMAIN),
    ("a.web.default.svc.cloudless", A, RCode.NXDOMAIN),
    ("_http._udp.web.default.svc.cloudless", SRV, RCode.NXDOMAIN),  # the port is TCP
    ("_gopher._tcp.web.default.svc.cloudless", SRV, RCode.NXDOMAIN),
], ids=str)
def test_known_names_without_the_record_and_unknown_names(name: str, qtype: int, rcode: RCode) -> None:
    answer = ask(dp.query(name, qtype))
    assert answer.rcode == rcode and answer.answers == [] and answer.authoritative


@pytest.mark.parametrize(("name", "namespace"), [
    ("example.com", "default"), ("web.com", "default"), ("cache", "default"), ("db.shop", "default"), (".", "default"),
    ("cloudless", "default"), ("localhost", "default"),
])
def test_everything_else_is_forwarded(name: str, namespace: str) -> None:
    query = parse_query(dp.query(name, A))
    assert isinstance(query, Query)
    assert isinstance(resolve(query, services=SERVICES, namespace=namespace), Forward)


def test_the_short_name_is_the_asking_workloads_namespace() -> None:
    assert [r.data for r in ask(dp.query("cache", A), namespace="shop").answers] == ["127.10.0.7"]


def test_edns_is_echoed_and_a_reply_too_large_is_truncated() -> None:
    answer = ask(dp.query("web.default.svc.cloudless", A, edns=4096))
    assert [r.rtype for r in answer.additional] == [41]
    big = ServiceRecord(name="big", namespace="default", vip="127.10.0.9",
                        ports=tuple(ServicePort(port=1000 + i, target_port=80, name="p") for i in range(40)),
                        endpoints=(ServiceEndpoint(node="pi", replica="b"),))
    query = parse_query(dp.query("_p._tcp.big.default.svc.cloudless", SRV))
    assert isinstance(query, Query)
    result = resolve(query, services=(big,), namespace="default")
    assert isinstance(result, Reply) and len(result.packet) <= 512
    cut = dp.read(result.packet)
    assert cut.truncated and cut.answers == []
    whole = resolve(query, services=(big,), namespace="default", max_size=65535)  # what the TCP server passes
    assert isinstance(whole, Reply) and len(dp.read(whole.packet).answers) == 40


@pytest.mark.parametrize(("packet", "reason", "rcode"), [
    (b"\x12\x34\x01", "shorter than a DNS header", None),
    (dp.query("web")[:2] + b"\x81\x00" + dp.query("web")[4:], "a response", None),
    (dp.query("web")[:2] + b"\x28\x00" + dp.query("web")[4:], "opcode 5", RCode.NOTIMP),
    (dp.query("web")[:4] + b"\x00\x02" + dp.query("web")[6:], "sections 2/0/0/0", RCode.FORMERR),
    (dp.query("web")[:-3], "question ends early", RCode.FORMERR),
    (dp.query("web")[:12] + b"\x40web\x00\x00\x01\x00\x01", "compressed or extended", RCode.FORMERR),
    (dp.query("web")[:12] + b"\xc0\x0c\x00\x01\x00\x01", "compressed or extended", RCode.FORMERR),
    (dp.query("web")[:12] + b"\x3f" + b"a" * 10, "label runs past the end", RCode.FORMERR),
    (dp.query("web") + b"\x00", "1 bytes after the last record", RCode.FORMERR),
    (dp.query("web")[:12] + b"".join(b"\x3f" + b"a" * 63 for _ in range(5)) + b"\x00\x00\x01\x00\x01",
     "longer than 255", RCode.FORMERR),
    (dp.query("web")[:10] + b"\x00\x01" + dp.query("web")[12:] + b"\x00\x00\x01\x00\x01" + b"\x00" * 6,
     "type 1 (only OPT)", RCode.FORMERR),
    (dp.query("web") + b"\x00" * 5000, "at most 4096", RCode.FORMERR),
], ids=["short", "response", "opcode", "two-questions", "cut", "ext-label", "pointer", "label-past-end", "trailing",
        "name-too-long", "not-opt", "huge"])
def test_bad_packets_are_rejections_with_a_reason(packet: bytes, reason: str, rcode: RCode | None) -> None:
    result = parse_query(packet)
    assert isinstance(result, Malformed) and reason in result.reason, result
    if rcode is None:
        assert result.reply is None
    else:
        assert result.reply is not None
        answer = dp.read(result.reply)
        assert (answer.ident, answer.rcode) == (0x1234, rcode)


@given(st.binary(max_size=600))
def test_no_packet_makes_the_parser_raise(packet: bytes) -> None:
    result = parse_query(packet)
    if isinstance(result, Query):
        resolve(result, services=SERVICES, namespace="default")


@given(st.data())
def test_corrupting_a_real_query_never_raises(data: st.DataObject) -> None:
    packet = bytearray(dp.query("_http._tcp.web.default.svc.cloudless", SRV, edns=1232))
    for _ in range(data.draw(st.integers(1, 4))):
        packet[data.draw(st.integers(0, len(packet) - 1))] = data.draw(st.integers(0, 255))
    result = parse_query(bytes(packet[:data.draw(st.integers(0, len(packet)))]))
    if isinstance(result, Query):
        reply = resolve(result, services=SERVICES, namespace="default")
        if isinstance(reply, Reply):
            dp.read(reply.packet)


def test_servfail_keeps_the_id_and_question() -> None:
    query = parse_query(dp.query("example.com", A))
    assert isinstance(query, Query)
    answer = dp.read(servfail(query))
    assert (answer.ident, answer.rcode, answer.question) == (0x1234, RCode.SERVFAIL, "example.com")


@pytest.mark.parametrize(("vip", "ok"), [("127.10.0.5", True), ("127.0.0.1", False), ("10.0.0.1", False),
                                         ("127.1", False), ("::1", False), ("", False)])
def test_virtual_addresses_come_from_127_8(vip: str, ok: bool) -> None:
    assert (vip_problem(vip) is None) is ok


def test_a_service_with_a_bad_vip_is_not_answered() -> None:
    bad = ServiceRecord(name="web", namespace="default", vip="10.1.2.3")
    query = parse_query(dp.query("web.default.svc.cloudless", A))
    assert isinstance(query, Query)
    result = resolve(query, services=(bad,), namespace="default")
    assert isinstance(result, Reply) and result.rcode == RCode.NXDOMAIN
    assert struct.unpack_from("!H", result.packet, 6)[0] == 0

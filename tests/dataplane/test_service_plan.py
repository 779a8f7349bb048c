"""The proxy's pure decisions: reading a table (what is left out and why), listeners per namespace, ingress, endpoint
changes, who a peer may reach, process-workload variables, and the peer format (round trips, never an exception)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.wire import IngressPort, Protocol, ServiceEndpoint, ServicePort, ServiceRecord, ServiceTable
from dataplane.service_plan import (
    S3_PORT,
    S3_SERVICE,
    UDP_REPLY,
    UDP_REQUEST,
    EndpointChange,
    Target,
    UdpDatagram,
    admit,
    decode_target,
    decode_udp,
    encode_target,
    endpoint_changes,
    env_vars,
    ingress_for,
    listeners_for,
    read_table,
    s3_env,
    stream_header,
    udp_reply,
    udp_request,
    without_builtins,
)

HTTP = ServicePort(port=80, target_port=8080, name="http")
DNS = ServicePort(port=53, target_port=5353, name="dns", protocol=Protocol.UDP)


def svc(name: str, vip: str, *endpoints: ServiceEndpoint, ns: str = "default", ports: tuple[ServicePort, ...] = (
        HTTP, DNS), ingress: tuple[IngressPort, ...] = ()) -> ServiceRecord:
    return ServiceRecord(name=name, namespace=ns, vip=vip, ports=ports, endpoints=endpoints, ingress=ingress)


def tbl(*services: ServiceRecord, node: str = "pi") -> ServiceTable:
    return ServiceTable(node_id=node, generation=1, epoch=1, ts=time.time(), zone="home", services=services)


def test_a_table_is_read_leaving_out_what_cannot_be_served_with_reasons() -> None:
    view = read_table(tbl(
        svc("web", "127.1.0.1", ingress=(IngressPort(port=80, host_port=8080), IngressPort(port=99, host_port=81))),
        svc("bad", "10.0.0.1"),
        svc("web", "127.1.0.2"),
        svc("twin", "127.1.0.1"),
        svc("api", "127.1.0.3", ports=(HTTP, HTTP), ingress=(IngressPort(port=80, host_port=8080),)),
    ), "pi")
    assert sorted(view.services) == [("default", "api"), ("default", "web")]
    assert view.services[("default", "api")].ports == (HTTP,)
    assert view.services[("default", "api")].ingress == ()
    assert view.zone == "home"
    joined = "\n".join(view.problems)
    for fragment in ("service default/bad: vip 10.0.0.1: not in 127.0.0.0/8", "service default/web: listed twice",
                     "service default/twin: vip 127.1.0.1 is taken by default/web", "port 99: no such port",
                     "port 80/TCP listed twice", "host port 8080 for port 80: host port taken"):
        assert fragment in joined
    assert read_table(tbl(node="laptop"), "pi").problems == ("a service table for 'laptop', this node is 'pi': "
                                                             "ignored",)


def test_listeners_are_the_namespaces_service_ports_and_ingress_the_published_ones() -> None:
    view = read_table(tbl(svc("web", "127.1.0.1", ingress=(IngressPort(port=53, host_port=5353),)),
                          svc("cache", "127.1.0.2", ns="shop", ports=(HTTP,))), "pi")
    assert listeners_for(view, "default") == {("127.1.0.1", 80, Protocol.TCP): (("default", "web"), 80),
                                              ("127.1.0.1", 53, Protocol.UDP): (("default", "web"), 53)}
    assert listeners_for(view, "shop") == {("127.1.0.2", 80, Protocol.TCP): (("shop", "cache"), 80)}
    assert ingress_for(view, "0.0.0.0") == {("0.0.0.0", 5353, Protocol.UDP): (("default", "web"), 53)}


def test_endpoint_changes_name_what_came_and_went() -> None:
    a, b, c = (ServiceEndpoint(node=n, replica=r) for n, r in (("pi", "w0"), ("laptop", "w1"), ("vps", "w2")))
    before = read_table(tbl(svc("web", "127.1.0.1", a, b)), "pi")
    after = read_table(tbl(svc("web", "127.1.0.1", b, c)), "pi")
    assert endpoint_changes(before, after) == ((EndpointChange("default", "web", "vps", "w2"),),
                                               (EndpointChange("default", "web", "pi", "w0"),))
    assert endpoint_changes(after, after) == ((), ())


@pytest.mark.parametrize(("target", "protocol", "problem"), [
    (Target("default", "web", "w0", 8080), Protocol.TCP, None),
    (Target("default", "web", "w0", 5353), Protocol.UDP, None),
    (Target("default", "web", "w0", 5353), Protocol.TCP, "port 5353/TCP is not a target port"),
    (Target("default", "web", "w1", 8080), Protocol.TCP, "w1 is not a ready endpoint of default/web on pi"),
    (Target("default", "web", "w9", 8080), Protocol.TCP, "w9 is not a ready endpoint"),
    (Target("other", "web", "w0", 8080), Protocol.TCP, "no service other/web on pi"),
], ids=["tcp", "udp", "wrong-protocol", "endpoint-elsewhere", "no-endpoint", "no-service"])
def test_a_peer_reaches_only_listed_replicas_here_on_their_target_ports(target: Target, protocol: Protocol,
                                                                         problem: str | None) -> None:
    view = read_table(tbl(svc("web", "127.1.0.1", ServiceEndpoint(node="pi", replica="w0"),
                              ServiceEndpoint(node="laptop", replica="w1"))), "pi")
    result = admit(view, target, "pi", protocol)
    assert result == problem if problem is None else (result is not None and problem in result)


def test_process_variables_follow_kubernetes_naming() -> None:
    web = svc("my-web.v2", "127.1.0.1")
    bare = svc("db", "127.1.0.2", ports=(ServicePort(port=5432, target_port=5432),))
    env = env_vars([web, bare, svc("unbound", "127.1.0.3")], {
        (("default", "my-web.v2"), 80, Protocol.TCP): 40001, (("default", "my-web.v2"), 53, Protocol.UDP): 40002,
        (("default", "db"), 5432, Protocol.TCP): 40003})
    assert env == {"MY_WEB_V2_SERVICE_HOST": "127.0.0.1", "MY_WEB_V2_SERVICE_PORT": "40001",
                   "MY_WEB_V2_SERVICE_PORT_HTTP": "40001", "MY_WEB_V2_SERVICE_PORT_DNS": "40002",
                   "DB_SERVICE_HOST": "127.0.0.1", "DB_SERVICE_PORT": "40003"}


ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", fullmatch=True)
targets = st.builds(Target, ids, ids, ids, st.integers(1, 65535))


@given(targets, st.integers(0, 2**64 - 1), st.binary(max_size=64))
def test_the_peer_format_round_trips(target: Target, flow: int, payload: bytes) -> None:
    header = stream_header(target)
    assert header[0] == 1 and header[1] == len(header) - 2 and decode_target(header[2:]) == target
    assert decode_udp(udp_request(flow, target, payload)) == UdpDatagram(UDP_REQUEST, flow, target, payload)
    assert decode_udp(udp_reply(flow, payload)) == UdpDatagram(UDP_REPLY, flow, None, payload)


@given(st.binary(max_size=300))
def test_no_bytes_make_the_decoders_raise(data: bytes) -> None:
    assert isinstance(decode_target(data), Target | str)
    assert isinstance(decode_udp(data), UdpDatagram | str)


@pytest.mark.parametrize(("body", "problem"), [
    (b"", "ends inside namespace"),
    (b"\x07default\x03web", "ends inside replica"),
    (b"\x07default\x03web\x02w0\x1f", "1 bytes where the 2-byte target port belongs"),
    (b"\x07default\x03web\x02w0\x00\x00", "target port 0"),
    (b"\x07default\x03w b\x02w0\x00\x50", "service 'w b' is not an id"),
    (b"\x07default\x03web\x02w0\x00\x50\x00", "3 bytes where the 2-byte"),
])
def test_bad_targets_are_named(body: bytes, problem: str) -> None:
    result = decode_target(body)
    assert isinstance(result, str) and problem in result


def test_a_name_that_is_no_id_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="is not an id"):
        encode_target(Target("default", "a/b", "w0", 80))


def test_the_builtin_s3_service_is_served_to_every_namespace_unless_the_node_opts_out() -> None:
    gateway = ServiceEndpoint(node="s3@coord-1", replica="builtin")
    s3 = svc("s3", "127.77.0.9", gateway, ns="cloudless", ports=(ServicePort(S3_PORT, S3_PORT, name="http"),))
    table = tbl(svc("web", "127.1.0.1", ports=(HTTP,)), s3)
    view = read_table(table, "pi")
    assert listeners_for(view, "default") == {("127.1.0.1", 80, Protocol.TCP): (("default", "web"), 80),
                                              ("127.77.0.9", 80, Protocol.TCP): (S3_SERVICE, 80)}
    assert listeners_for(view, "shop") == {("127.77.0.9", 80, Protocol.TCP): (S3_SERVICE, 80)}
    assert [r.name for r in without_builtins(table).services] == ["web"]
    assert listeners_for(read_table(without_builtins(table), "pi"), "shop") == {}
    plain = tbl(svc("web", "127.1.0.1"))
    assert without_builtins(plain) is plain
    # a process workload: boto3 and the AWS CLI prefer AWS_ENDPOINT_URL_S3 to the secret's AWS_ENDPOINT_URL
    assert s3_env({(S3_SERVICE, S3_PORT, Protocol.TCP): 40123}) == {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:40123"}
    assert s3_env({(("default", "web"), 80, Protocol.TCP): 40124}) == {}

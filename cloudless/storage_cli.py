"""`cloudless storage ...`: the cluster's object store for people (issue 20; docs/storage.md#using-storage).

Two channels, each the one that fits:
- the coordinator's REST API (the admin credential, like every admin command): `status`, `buckets` (list with
  object counts, create with a replication factor, delete) and `keys` (S3 access keys with bucket grants; `--secret
  NS/NAME` also stores the key, the endpoint and the cluster CA as a cluster secret a workload references);
- S3 itself, SigV4-signed with an access key (`cloudless.s3_client`: the admin key `cloudless up` wrote to
  storage.json, or AWS_* variables): `ls`, `cp` and `rm`. Objects above 8 MiB go up in 8 MiB multipart parts; both
  directions stream, with progress on a terminal's stderr.

The conventions are `cloudless.ctl`'s: arguments checked before any request, `cloudless: error:` and a
`cloudless: hint:` line, exit 0 ok, 1 refused or unreachable, 2 usage.
"""

from __future__ import annotations

import argparse
import base64
import mimetypes
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from cloudless import render
from cloudless.client import ApiError, ConfigError, JSONObject
from cloudless.ctl import Ctx, UsageError, add_command, as_command, check_name, connection_flags, require_yaml
from cloudless.s3_client import DEFAULT_REGION, S3Client, check_endpoint, resolve_storage_config
from cloudless.secrets_cli import secret_ref
from cloudless.storage_transfer import Progress, S3Path, download, s3_path, upload
from dataplane.objects.chunking import COMPRESSIONS

if TYPE_CHECKING:
    from cloudless.ctl import Sub

LEVELS = {"ro": "read", "read": "read", "rw": "write", "write": "write", "admin": "admin"}
CA_MOUNT = "/run/cloudless/storage"
IN_CLUSTER_ENDPOINT = "http://s3.cloudless"  # the built-in service every agent serves its workloads (docs/storage.md)


# ---- argument types -------------------------------------------------------------------------------------------

def grant(text: str) -> tuple[str, str]:
    """`BUCKET[:ro|rw|admin]` (or read/write; `*` for every bucket) -> (bucket, read|write|admin); default rw."""
    bucket, sep, level = text.rpartition(":")
    if not sep:
        bucket, level = text, "rw"
    if level.lower() not in LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r}: permission must be ro, rw or admin (e.g. photos:ro)")
    if not bucket:
        raise argparse.ArgumentTypeError(f"{text!r}: no bucket name (use * for every bucket)")
    return bucket, LEVELS[level.lower()]


def _replicas(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 5:
        raise argparse.ArgumentTypeError(f"replicas must be a whole number from 1 to 5, got {text!r}")
    return int(text)


# ---- S3 side --------------------------------------------------------------------------------------------------

def s3(args: argparse.Namespace, ctx: Ctx) -> S3Client:
    cfg = resolve_storage_config(endpoint=args.endpoint, config=args.storage_config, env=ctx.env,
                                 cli_config=args.config)
    return S3Client(cfg, clock=time.time)  # signatures carry the real time (the server allows 15 minutes of skew)


def cmd_cp(args: argparse.Namespace, ctx: Ctx) -> int:
    src_remote, dst_remote = args.src.startswith("s3://"), args.dst.startswith("s3://")
    if not src_remote and not dst_remote:
        raise UsageError("one side of cp is an S3 address", hint="cp FILE s3://BUCKET/KEY, or cp s3://BUCKET/KEY FILE")
    client = s3(args, ctx)

    def progress_for(total: int | None) -> Progress:
        return Progress(f"{args.src} -> {args.dst}", total, clock=ctx.clock.monotonic, stream=sys.stderr,
                        enabled=not args.quiet)
    try:
        if src_remote and dst_remote:
            src, dst = s3_path(args.src), s3_path(args.dst)
            if not src.key:
                raise UsageError(f"{args.src} names no object", hint="write s3://BUCKET/KEY")
            dst = S3Path(dst.bucket, dst.key or Path(src.key).name) if not dst.key.endswith("/") else S3Path(
                dst.bucket, dst.key + Path(src.key).name)
            client.copy(src.bucket, src.key, dst.bucket, dst.key)
            _done(args, ctx, f"copy: {src} to {dst}")
        elif src_remote:
            src = s3_path(args.src)
            if not src.key or src.key.endswith("/"):
                raise UsageError(f"{args.src} names no object", hint="write s3://BUCKET/KEY (a whole prefix: "
                                 "`cloudless storage ls --recursive` lists it)")
            n = download(client, src, args.dst, progress_for=progress_for)
            if args.dst != "-":
                _done(args, ctx, f"download: {src} to {args.dst} ({render.memory(n)}B)")
        else:
            _upload_cmd(args, ctx, client, progress_for)
    finally:
        client.close()
    return 0


def _upload_cmd(args: argparse.Namespace, ctx: Ctx, client: S3Client,
                progress_for: Callable[[int | None], Progress]) -> None:
    dst = s3_path(args.dst)
    if args.src == "-":
        if not dst.key or dst.key.endswith("/"):
            raise UsageError("standard input has no file name", hint="name the object: s3://BUCKET/KEY")
        src: BinaryIO = sys.stdin.buffer
        total = None
    else:
        path = Path(args.src)
        if path.is_dir():
            raise UsageError(f"{args.src} is a directory", hint="copy files one at a time (cp FILE s3://B/KEY)")
        try:
            src = path.open("rb")
        except OSError as exc:
            raise UsageError(f"cannot read {args.src}: {exc.strerror or exc}") from None
        total = os.fstat(src.fileno()).st_size
        if not dst.key or dst.key.endswith("/"):
            dst = S3Path(dst.bucket, dst.key + path.name)
    content_type = args.content_type or (mimetypes.guess_type(dst.key)[0] if args.src != "-" else None)
    progress = progress_for(total)
    try:
        upload(client, src, dst, total=total, content_type=content_type, progress=progress)
    finally:
        if src is not sys.stdin.buffer:
            src.close()
    progress.finish()
    _done(args, ctx, f"upload: {args.src} to {dst} ({render.memory(progress.done)}B)")


def _done(args: argparse.Namespace, ctx: Ctx, line: str) -> None:
    if not args.quiet:
        ctx.out(line)


def cmd_ls(args: argparse.Namespace, ctx: Ctx) -> int:
    client = s3(args, ctx)
    try:
        if args.target is None:
            for name in client.list_buckets():
                ctx.out(f"s3://{name}/")
            return 0
        where = s3_path(args.target)
        shown = 0
        for page in client.list_all(where.bucket, where.key, delimiter="" if args.recursive else "/"):
            for prefix in page.prefixes:
                ctx.out(f"{'PRE':>31} {prefix}")
            for e in page.entries:
                size = render.memory(e.size) + "B" if args.human_readable else str(e.size)
                ctx.out(f"{e.modified[:19].replace('T', ' '):19} {size:>11} {e.key}")
            shown += len(page.entries) + len(page.prefixes)
        if shown == 0:
            ctx.err(f"nothing under {where}")
        return 0
    finally:
        client.close()


def cmd_rm(args: argparse.Namespace, ctx: Ctx) -> int:
    target = s3_path(args.target)
    client = s3(args, ctx)
    try:
        if not args.recursive:
            if not target.key:
                raise UsageError(f"{args.target} names no object", hint="add --recursive to delete everything under "
                                 "a prefix (the bucket itself: `cloudless storage buckets rm NAME`)")
            client.delete(target.bucket, target.key)
            ctx.out(f"delete: {target}")
            return 0
        keys = [e.key for page in client.list_all(target.bucket, target.key) for e in page.entries]
        for key in keys:
            client.delete(target.bucket, key)
            ctx.out(f"delete: s3://{target.bucket}/{key}")
        if not keys:
            ctx.err(f"nothing under {target}")
        return 0
    finally:
        client.close()


# ---- REST side ------------------------------------------------------------------------------------------------

def _call(ctx: Ctx, method: str, path: str, **kw: Any) -> Any:
    try:
        return ctx.api.request(method, path, **kw).body
    except ApiError as exc:
        if exc.status == 503 and "no object storage" in exc.message:
            exc.hint = "start the cluster with S3: `cloudless up --s3-port 9000`"
        elif exc.status == 404 and "/v1/storage" in exc.message:
            exc.hint = "this coordinator is older than the CLI: upgrade it to use storage"
        raise


def _emit(ctx: Ctx, fmt: str, doc: object, table: Callable[[], str]) -> int:
    if fmt == "yaml":
        require_yaml("-o yaml")
    ctx.out(render.dump(doc, fmt) if fmt in ("json", "yaml") else table())
    return 0


def redundancy(bucket: Mapping[str, Any]) -> str:
    if bucket.get("erasure"):
        return f"erasure-coded {bucket['erasure']}"
    return f"{bucket.get('replicas')} replicas"


def buckets_table(items: Sequence[Mapping[str, Any]], now: float) -> str:
    """SIZE is what the objects hold, STORED what they take as stored (one copy; below SIZE when compressed)."""
    rows = [[str(b.get("name")), redundancy(b), str(b.get("compression") or render.NONE),
             render.text(b.get("objects")), render.memory(b.get("bytes")),
             render.memory(b.get("storedBytes", b.get("bytes"))), render.age(b.get("created"), now)] for b in items]
    return render.table(["NAME", "REDUNDANCY", "COMPRESSION", "OBJECTS", "SIZE", "STORED", "AGE"], rows)


def cmd_buckets(args: argparse.Namespace, ctx: Ctx) -> int:
    match args.action, args.name:
        case ("ls" | None), None:
            items = _call(ctx, "GET", "/v1/storage/buckets").get("items") or []
            if args.output == "table" and not items:
                ctx.err("no buckets; create one with `cloudless storage buckets create NAME`")
                return 0
            return _emit(ctx, args.output, {"items": items}, lambda: buckets_table(items, ctx.clock.time()))
        case "create", str(name):
            if args.erasure and args.replicas is not None:
                raise UsageError("--erasure and --replicas exclude each other",
                                 hint="an erasure-coded bucket stores fragments (4+2 survives any 2 lost nodes)")
            body: JSONObject = {"name": name}
            body.update({"erasure": args.erasure} if args.erasure else {"replicas": args.replicas or 2})
            if args.compression:
                body["compression"] = args.compression
            doc = _call(ctx, "POST", "/v1/storage/buckets", body=body)
            compressed = f", {doc['compression']}-compressed" if doc.get("compression") else ""
            return _emit(ctx, args.output, doc, lambda: f"bucket {name} created ({redundancy(doc)}{compressed})")
        case "rm", str(name):
            _call(ctx, "DELETE", f"/v1/storage/buckets/{name}")
            ctx.out(f"bucket {name} deleted")
            return 0
        case ("create" | "rm"), None:
            raise UsageError(f"`storage buckets {args.action}` needs a bucket NAME")
    raise UsageError(f"unexpected arguments {args.action} {args.name}",
                     hint="`storage buckets [ls]`, `buckets create NAME [--replicas N]` or `buckets rm NAME`")


def keys_table(items: Sequence[Mapping[str, Any]]) -> str:
    rows = [[str(k.get("id")), str(k.get("name")),
             ", ".join(f"{b}:{lvl}" for b, lvl in sorted((k.get("buckets") or {}).items()))] for k in items]
    return render.table(["ID", "NAME", "BUCKETS"], rows)


def cmd_keys(args: argparse.Namespace, ctx: Ctx) -> int:
    match args.action:
        case "ls":
            items = _call(ctx, "GET", "/v1/storage/keys").get("items") or []
            if args.output == "table" and not items:
                ctx.err("no access keys; make one with `cloudless storage keys create NAME --bucket BUCKET`")
                return 0
            return _emit(ctx, args.output, {"items": items}, lambda: keys_table(items))
        case "create":
            return _create_key(args, ctx)
        case "rm":
            if not args.arg:
                raise UsageError("`storage keys rm` needs the key ID", hint="see them with `cloudless storage keys ls`")
            _call(ctx, "DELETE", f"/v1/storage/keys/{args.arg}")
            ctx.out(f"access key {args.arg} deleted")
            return 0
    raise UsageError(f"unknown action {args.action!r}")


def _create_key(args: argparse.Namespace, ctx: Ctx) -> int:
    if not args.arg:
        raise UsageError("`storage keys create` needs a NAME (who the key is for)")
    name = check_name(args.arg, "key name")
    if not args.bucket:
        raise UsageError("a key needs at least one bucket grant", hint="add --bucket BUCKET[:ro|rw|admin]")
    target = _workload_endpoint(args, ctx) if args.secret else None  # before the key exists: none made in vain
    doc = _call(ctx, "POST", "/v1/storage/keys", body={"name": name, "buckets": dict(args.bucket)})
    if not args.secret:
        if args.output in ("json", "yaml"):
            return _emit(ctx, args.output, doc, lambda: "")
        ctx.out(f"AWS_ACCESS_KEY_ID={doc['id']}\nAWS_SECRET_ACCESS_KEY={doc['secret']}")
        ctx.err(f"access key {doc['id']} for {name}: the secret is shown this once; keep it safe")
        return 0
    assert target is not None
    ns, secret_name = args.secret
    endpoint, region, ca_pem = target
    data = workload_secret(doc, endpoint=endpoint, region=region, ca_pem=ca_pem, ca_mount=args.ca_mount)
    try:
        _call(ctx, "POST", f"/v1/secrets/{ns}",
              body={"name": secret_name, "data": {k: base64.b64encode(v).decode() for k, v in data.items()}})
    except Exception:
        _call(ctx, "DELETE", f"/v1/storage/keys/{doc['id']}")  # no key left behind that nobody can use
        raise
    ctx.out(f"access key {doc['id']} for {name} stored in secret {ns}/{secret_name} (keys: {', '.join(sorted(data))})")
    ctx.err(f"reference it from a workload in namespace {ns}: env[].valueFrom.secretKeyRef {{name: {secret_name}, key: "
            "AWS_ACCESS_KEY_ID}, ... (docs/storage.md#using-storage)")
    return 0


def _workload_endpoint(args: argparse.Namespace, ctx: Ctx) -> tuple[str, str, bytes | None]:
    """(endpoint, region, CA PEM) for a workload's secret. The endpoint: --endpoint-url, else the in-cluster one
    (`http://s3.cloudless`, every agent's local endpoint: plain HTTP inside the device, the overlay beyond it, so no CA
    is stored). An HTTPS endpoint needs the cluster CA: --ca-file, else the storage config's. The region: the storage
    config's when there is one."""
    endpoint = check_endpoint(args.endpoint_url or IN_CLUSTER_ENDPOINT)
    https, ca, region = endpoint.startswith("https://"), args.ca_file, DEFAULT_REGION
    try:
        cfg = resolve_storage_config(endpoint=args.endpoint, config=args.storage_config, env=ctx.env,
                                     cli_config=args.config)
        region, ca = cfg.region, ca or cfg.ca
    except ConfigError:
        if https and not ca:
            raise
    return endpoint, region, _ca_pem(ca) if https else None


def _ca_pem(path: str | None) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the CA bundle {path}: {exc.strerror or exc}",
                         hint="--ca-file PATH names the cluster CA (`cloudless up` printed its path)") from None


def workload_secret(key: Mapping[str, Any], *, endpoint: str, region: str, ca_pem: bytes | None,
                    ca_mount: str = CA_MOUNT) -> dict[str, bytes]:
    """What a workload needs to reach the cluster's S3 with boto3, the AWS CLI or rclone: the variables they read,
    and the cluster CA (`ca.crt`, with AWS_CA_BUNDLE pointing where a secretVolume at `ca_mount` puts it)."""
    data = {"AWS_ACCESS_KEY_ID": str(key["id"]).encode(), "AWS_SECRET_ACCESS_KEY": str(key["secret"]).encode(),
            "AWS_ENDPOINT_URL": endpoint.encode(), "AWS_REGION": region.encode()}
    if ca_pem:
        data["ca.crt"] = ca_pem
        data["AWS_CA_BUNDLE"] = f"{ca_mount.rstrip('/')}/ca.crt".encode()
    return data


def status_text(doc: Mapping[str, Any], now: float) -> str:
    rows = [[str(n.get("node")), str(n.get("zone") or render.NONE), "yes" if n.get("online") else "no",
             render.memory(n.get("quotaBytes")), render.memory(n.get("usedBytes")), render.text(n.get("chunks"))]
            for n in doc.get("nodes") or []]
    repair = doc.get("repair") or {}
    last = repair.get("lastRun")
    lines = [render.table(["NODE", "ZONE", "ONLINE", "QUOTA", "USED", "CHUNKS"], rows) if rows else
             "no storage nodes (agents offer storage with --storage-quota SIZE)", "",
             f"endpoint:          {render.text(doc.get('endpoint'))}",
             f"chunks:            {render.text(doc.get('chunks'))}",
             f"under-replicated:  {render.text(doc.get('underReplicated'))}",
             f"unrecoverable:     {render.text(doc.get('unrecoverable'))}",
             f"repair:            {render.text(repair.get('copied'))} copies "
             f"({render.memory(repair.get('copiedBytes'))}B) made, {render.text(repair.get('failed'))} failed; "
             f"last pass {render.memory(repair.get('rateBytesPerS'))}B/s, "
             f"{render.age(last, now) + ' ago' if last else 'never run'}"]
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace, ctx: Ctx) -> int:
    doc = _call(ctx, "GET", "/v1/storage/status")
    return _emit(ctx, args.output, doc, lambda: status_text(doc, ctx.clock.time()))


# ---- parsers --------------------------------------------------------------------------------------------------

EXAMPLES = """\
  cloudless storage status                              # per node: quota, used, chunks; repair progress
  cloudless storage buckets create photos --replicas 3
  cloudless storage buckets create archive --erasure 4+2   # RS(4,2) on >= 6 storage nodes
  cloudless storage buckets                             # buckets with object counts and sizes
  cloudless storage cp ./holiday.mp4 s3://photos/2025/  # multipart above 8 MiB
  tar c ./site | cloudless storage cp - s3://backups/site.tar
  cloudless storage ls s3://photos/2025/
  cloudless storage ls --recursive s3://photos
  cloudless storage cp s3://photos/2025/holiday.mp4 .
  cloudless storage cp s3://backups/site.tar - | tar x
  cloudless storage rm s3://photos/2025/holiday.mp4
  cloudless storage keys create backup-job --bucket backups:rw --bucket photos:ro --secret prod/s3
  cloudless storage keys ls
  cloudless storage keys rm CLK0123456789ABCDEFG"""


def _s3_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("S3 endpoint and access key (flag > AWS_* environment > storage config file)")
    g.add_argument("--endpoint", metavar="URL", help="the cluster's S3 endpoint, e.g. https://127.0.0.1:9000 (env "
                   "AWS_ENDPOINT_URL; default from the storage config)")
    g.add_argument("--storage-config", metavar="PATH", help="S3 credentials written by `cloudless up` (env "
                   "CLOUDLESS_STORAGE_CONFIG; default storage.json beside the CLI config (--config), i.e. "
                   "~/.config/cloudless/storage.json). AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and "
                   "AWS_CA_BUNDLE override it")
    return p


def _output(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table",
                   help="table for people, json/yaml for scripts (default table)")


def _sub(actions: Any, name: str, parents: list[argparse.ArgumentParser],
         func: Callable[[argparse.Namespace, Ctx], int], *, help: str, description: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = actions.add_parser(name, parents=parents, help=help, description=description)
    p.set_defaults(func=as_command(func))
    return p


def add_parser(sub: Sub) -> None:
    conn, s3flags = connection_flags(), _s3_flags()
    p = add_command(sub, "storage", conn, func=lambda a, c: 2, help="object storage (S3): buckets, files, keys",
                    description="The cluster's object store, spoken to as S3 (any S3 client works too: boto3, the "
                    "AWS CLI, rclone). status, buckets and keys use the coordinator's API (admin credential); ls, cp "
                    "and rm speak S3 with an access key (the admin key `cloudless up` wrote to storage.json, or "
                    "AWS_* variables). See docs/storage.md#using-storage.", examples=EXAMPLES)
    actions = p.add_subparsers(dest="storage_action", metavar="ACTION", required=True)

    st = _sub(actions, "status", [conn], cmd_status, help="storage nodes, chunks, repair progress", description=(
        "Each storage node's quota, used bytes, chunk count and whether it is online; chunks in total, "
        "under-replicated (fewer good copies than their bucket's replicas: repair is copying them) and "
        "unrecoverable (no good copy left); the repair loop's progress."))
    _output(st)

    b = _sub(actions, "buckets", [conn], cmd_buckets, help="list, create or delete buckets", description=(
        "Without arguments (or `ls`): every bucket with its redundancy, object count and size. `create NAME` makes "
        "a bucket: replicated (--replicas: copies of each chunk, on distinct nodes and zones where possible; "
        "default 2) or erasure-coded (--erasure 4+2, with at least 6 storage nodes), optionally compressing its "
        "chunks (--compression zstd). `rm NAME` deletes an empty bucket."))
    b.usage = ("cloudless storage buckets [ls] | create NAME [--replicas N | --erasure 4+2] [--compression zstd] | "
               "rm NAME")
    b.add_argument("action", nargs="?", choices=("ls", "create", "rm"), help="default ls")
    b.add_argument("name", nargs="?", metavar="NAME", help="the bucket (create, rm)")
    b.add_argument("--replicas", type=_replicas, default=None, metavar="N",
                   help="copies of each chunk, 1-5 (default 2)")
    b.add_argument("--erasure", metavar="K+M", help="erasure-code the bucket instead: 4+2 (RS(4,2): any 2 of 6 "
                   "fragments may be lost, 1.5x the data; needs at least 6 storage nodes)")
    b.add_argument("--compression", choices=COMPRESSIONS, default=None,
                   help="compress each 1 MiB chunk with zstd before storing it (text, logs, JSON take less disk; "
                   "chunks that do not shrink by 1/8 are stored as they are)")
    _output(b)

    ls = _sub(actions, "ls", [conn, s3flags], cmd_ls, help="list buckets, or objects under s3://BUCKET/PREFIX",
              description="Without an address: the buckets this access key may see. With s3://BUCKET[/PREFIX]: "
              "objects (time, size in bytes, key) and, unless --recursive, the `PRE` sub-prefixes one level "
              "down. Every page of the listing is followed.")
    ls.add_argument("target", nargs="?", metavar="s3://BUCKET[/PREFIX]")
    ls.add_argument("-r", "--recursive", action="store_true", help="every object under the prefix, no PRE lines")
    ls.add_argument("-H", "--human-readable", action="store_true", help="sizes in KiB/MiB/GiB")

    cp = _sub(actions, "cp", [conn, s3flags], cmd_cp, help="copy a file to, from or within S3", description=(
        "Copy between a local file (or - for standard input/output) and s3://BUCKET/KEY, or between two S3 "
        "addresses (server side). A KEY ending in / (or a missing one) takes the file's name; a local directory as "
        "the target takes the object's name. Uploads above 8 MiB go in 8 MiB multipart parts (aborted if one "
        "fails); downloads land in a temporary file renamed into place when complete. Progress on a terminal's "
        "stderr for transfers of 8 MiB or more."))
    cp.add_argument("src", metavar="SRC", help="FILE, - (standard input) or s3://BUCKET/KEY")
    cp.add_argument("dst", metavar="DST", help="s3://BUCKET/KEY[/], FILE, DIRECTORY or - (standard output)")
    cp.add_argument("--content-type", metavar="TYPE", help="the object's Content-Type (default: from the name)")
    cp.add_argument("-q", "--quiet", action="store_true", help="no progress and no summary line")

    rm = _sub(actions, "rm", [conn, s3flags], cmd_rm, help="delete an object (or everything under a prefix)",
              description="Delete s3://BUCKET/KEY; with --recursive, every object under s3://BUCKET/PREFIX.")
    rm.add_argument("target", metavar="s3://BUCKET/KEY")
    rm.add_argument("-r", "--recursive", action="store_true", help="every object under the prefix")

    k = _sub(actions, "keys", [conn, s3flags], cmd_keys, help="S3 access keys: ls, create, rm", description=(
        "Access keys for people and workloads, each with grants per bucket: ro (list, get), rw (also put, delete, "
        "multipart) or admin (also create and delete the bucket); * is every bucket. `create NAME --bucket B[:rw]` "
        "prints the key and its secret once; with --secret NS/NAME it stores them instead as a cluster secret "
        "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION, and the cluster CA as ca.crt with "
        "AWS_CA_BUNDLE) that workloads reference. `rm ID` deletes a key: it stops working at once."))
    k.usage = ("cloudless storage keys ls | create NAME --bucket BUCKET[:ro|rw|admin] ... [--secret NS/NAME] | "
               "rm ID")
    k.add_argument("action", choices=("ls", "create", "rm"))
    k.add_argument("arg", nargs="?", metavar="NAME | ID", help="create: who the key is for; rm: the key's ID")
    k.add_argument("--bucket", type=grant, action="append", default=[], metavar="BUCKET[:ro|rw|admin]",
                   help="a grant (repeatable; default rw; * for every bucket)")
    k.add_argument("--secret", type=secret_ref, metavar="NS/NAME",
                   help="store the key, endpoint and CA as this cluster secret instead of printing them")
    k.add_argument("--endpoint-url", metavar="URL", help="with --secret: the S3 endpoint as workloads reach it "
                   f"(default: {IN_CLUSTER_ENDPOINT}, which every agent serves its workloads over the overlay)")
    k.add_argument("--ca-file", metavar="PATH", help="with --secret: the cluster CA to store (default: the "
                   "storage config's / AWS_CA_BUNDLE)")
    k.add_argument("--ca-mount", default=CA_MOUNT, metavar="DIR", help="with --secret: where the workload mounts "
                   f"the secret as files, for AWS_CA_BUNDLE (default {CA_MOUNT})")
    _output(k)

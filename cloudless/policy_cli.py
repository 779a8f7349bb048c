"""`cloudless policy check`: a local dry run of admission policy over workload files.

Reads the workload documents the way `cloudless apply` does (`cloudless.ctl.read_documents`: YAML with `---`,
JSON objects or lists, `-` for standard input), validates each with the coordinator's spec parser and evaluates it
against the secure default policy set, or against the `--policy` files instead of it. Nothing is sent anywhere.

Output: per workload a verdict line, then one line per violation, `DENY spec.securityContext.privileged: ...`
(also WARN and AUDIT); `-o json` prints the same as one JSON object. Exit codes: 0 every workload is allowed
(warnings included), 1 at least one is denied, 2 usage: bad arguments, unreadable files, invalid workload or
policy documents (all of them are reported before anything is evaluated).

The coordinator's cores (`coordinator.spec`, `coordinator.policy`) are imported when the command runs, never at
module level: `cloudless.cli` imports this module for every command, and the other admin commands must keep
working, and stay light, where only the CLI is used (tests/cli/test_imports.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudless import ctl

if TYPE_CHECKING:
    from coordinator.policy import Decision, Policy
    from coordinator.spec import Workload

    Sub = argparse._SubParsersAction[argparse.ArgumentParser]

OUTPUTS = ("text", "json")
EXAMPLES = """examples:
  cloudless policy check -f examples/hello.yaml
  cloudless policy check -f web.yaml -f db.yaml --policy team-policies.yaml -o json
  cat web.json | cloudless policy check -f -
"""


def add_parser(sub: Sub) -> None:
    p = sub.add_parser("policy", help="check workloads against admission policies (locally)",
                       description="Admission policy tools. Policies decide which workloads the coordinator "
                       "admits: images, privileges, host namespaces, capabilities, user, read-only root, seccomp, "
                       "resource limits.")
    actions = p.add_subparsers(dest="policy_action", metavar="ACTION", required=True)
    c = actions.add_parser(
        "check", help="dry-run admission of workload files (exit 1 if any is denied)",
        description="Evaluate each Workload document of the files against the secure default policies, or "
        "against the --policy files instead, and list every violation: DENY refuses the workload, WARN and AUDIT "
        "admit it. Local: nothing is sent to a coordinator. Exit 0 all allowed, 1 some denied, 2 usage or "
        "invalid documents.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("-f", "--filename", action="append", required=True, metavar="FILE",
                   help="YAML or JSON workload file, or - for standard input (repeatable)")
    c.add_argument("--policy", action="append", default=[], metavar="FILE",
                   help="YAML or JSON policy file to use instead of the default set (repeatable)")
    c.add_argument("-n", "--namespace", metavar="NAMESPACE",
                   help="namespace of documents that name none (default: default); policies are scoped by it")
    c.add_argument("-o", "--output", choices=OUTPUTS, default="text", help="text for people, json for scripts")
    c.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    try:
        return check(args.filename, args.policy, namespace=args.namespace, output=args.output)
    except ctl.UsageError as exc:
        print(f"cloudless: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"cloudless: hint: {exc.hint}", file=sys.stderr)
        return 2


def check(files: Sequence[str], policy_files: Sequence[str], *, namespace: str | None, output: str) -> int:
    from coordinator.policy import evaluate

    documents = ctl.read_documents(files, namespace)
    workloads = _workloads(documents)
    policies = _policies(policy_files)
    results = [(doc, evaluate(policies, workload)) for doc, workload in workloads]
    text = _json(results, policy_files) if output == "json" else _text(results)
    print(text, end="")
    return 0 if all(decision.allowed for _, decision in results) else 1


def _workloads(documents: Sequence[ctl.Document]) -> list[tuple[ctl.Document, Workload]]:
    from coordinator.errors import SpecError
    from coordinator.spec import parse_workload

    out: list[tuple[ctl.Document, Workload]] = []
    problems: list[str] = []
    for doc in documents:
        try:
            out.append((doc, parse_workload(doc.body)))
        except SpecError as exc:
            problems.append(_problem_text(f"{doc.source}: invalid workload", exc.errors))
    if problems:
        raise ctl.UsageError("\n".join(problems), hint="fix the documents; `cloudless apply` would refuse them too")
    return out


def _policies(paths: Sequence[str]) -> tuple[Policy, ...]:
    from coordinator.policy import PolicyError, default_policies, load_policies

    if not paths:
        try:
            return default_policies()
        except ImportError:
            raise ctl.UsageError("the default policy set is YAML, and reading it needs PyYAML, which is not installed",
                                 hint="`pip install pyyaml`, or pass --policy FILE.json") from None
    loaded: tuple[Policy, ...] = ()
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ctl.UsageError(f"--policy {path}: {exc.strerror or exc}") from None
        docs = ctl.load_documents(text, path)
        try:
            found = load_policies(docs, source=path, known=loaded)
        except PolicyError as exc:
            raise ctl.UsageError(_problem_text(f"{exc.source}: invalid policy", exc.errors)) from None
        if not found:
            raise ctl.UsageError(f"--policy {path} holds no documents")
        loaded += found
    return loaded


def _problem_text(title: str, errors: Sequence[tuple[str, str]]) -> str:
    return "\n".join([f"{title}:", *(f"  {path}: {message}" if path else f"  {message}" for path, message in errors)])


def _verdict(decision: Decision) -> str:
    if not decision.policies:
        return "allowed (no policy applies to this namespace)"
    counts = [(sum(v.action == action for v in decision.violations), action) for action in ("deny", "warn", "audit")]
    detail = ", ".join(f"{n} {action}" for n, action in counts if n)
    return ("allowed" if decision.allowed else "denied") + (f" ({detail})" if detail else "")


def _text(results: Sequence[tuple[ctl.Document, Decision]]) -> str:
    lines = []
    for doc, decision in results:
        lines.append(f"{doc.source}: workload/{doc.name} in namespace {doc.namespace}: {_verdict(decision)}")
        lines.extend(f"  {str(v.action).upper()} {v.field}: {v.message} [{v.policy}/{v.rule}]"
                     for v in decision.violations)
    return "".join(f"{line}\n" for line in lines)


def _json(results: Sequence[tuple[ctl.Document, Decision]], policy_files: Sequence[str]) -> str:
    data: dict[str, Any] = {
        "allowed": all(decision.allowed for _, decision in results),
        "policySource": list(policy_files) or "default",
        "results": [{"source": doc.source, "namespace": doc.namespace, "name": doc.name, **decision.to_json()}
                    for doc, decision in results],
    }
    return json.dumps(data, indent=2) + "\n"

"""Forget resources of given types in an exported Pulumi checkpoint, leaving the cloud alone.

Usage: `python forget.py STATE.json TYPE... > FORGOTTEN.json`, with STATE.json from
`pulumi stack export` and the result for `pulumi stack import` (docs/deploying.md, "Upgrading a
stack deployed before the dataset and the runtime accounts moved"). Each resource whose `type`
is one of TYPE is dropped from `deployment.resources`, and every reference to it is dropped from
the others' `dependencies`, `propertyDependencies` and `deletedWith` (the checkpoint's fields,
Pulumi's apitype.ResourceV3), so `pulumi state delete`'s refusal of a resource that others
depend on does not apply. A forgotten resource that is another's `parent`, or an operation
pending on one, is an error: nothing is written.

Hand-written: Pulumi's own `state delete` refuses resources with dependents, and
`--target-dependents` would forget the dependents too (the tables, the Cloud Run resources).
"""

from __future__ import annotations

import json
import sys
from typing import Any


class ForgetError(Exception):
    """The checkpoint cannot lose these resources safely."""


def forget(state: dict[str, Any], types: set[str]) -> tuple[dict[str, Any], list[str]]:
    """The checkpoint without the resources of `types`, and the URNs it dropped."""
    deployment = state.get("deployment")
    if not isinstance(deployment, dict) or not isinstance(deployment.get("resources"), list):
        raise ForgetError("not a `pulumi stack export` checkpoint (no deployment.resources)")
    resources: list[dict[str, Any]] = deployment["resources"]
    dropped = [r["urn"] for r in resources if r.get("type") in types]
    gone = set(dropped)
    kept = [dict(r) for r in resources if r["urn"] not in gone]
    for r in kept:
        if r.get("parent") in gone:
            raise ForgetError(f"{r['urn']} is a child of {r['parent']}, which would be forgotten")
        if "dependencies" in r:
            r["dependencies"] = [d for d in r["dependencies"] if d not in gone]
        if "propertyDependencies" in r:
            r["propertyDependencies"] = {
                k: [d for d in v if d not in gone] for k, v in r["propertyDependencies"].items()
            }
        if r.get("deletedWith") in gone:
            del r["deletedWith"]
    for op in deployment.get("pendingOperations") or []:
        if op.get("resource", {}).get("urn") in gone:
            raise ForgetError(f"an operation is pending on {op['resource']['urn']}")
    return {**state, "deployment": {**deployment, "resources": kept}}, dropped


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: forget.py STATE.json TYPE...", file=sys.stderr)
        return 2
    try:
        with open(argv[1], encoding="utf-8") as f:
            state = json.load(f)
        result, dropped = forget(state, set(argv[2:]))
    except (OSError, ValueError, ForgetError) as e:
        print(f"forget.py: {e}", file=sys.stderr)
        return 1
    for urn in dropped:
        print(f"forgot {urn}", file=sys.stderr)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

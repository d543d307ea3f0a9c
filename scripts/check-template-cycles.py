#!/usr/bin/env python3
"""Fails if template.yaml, once SAM-transformed, has a circular dependency.

cfn-lint and `sam validate` do not see cycles that SAM creates (e.g. a function
environment variable referencing the HttpApi whose routes reference the
function); CloudFormation would reject them only at deploy time.
Runs offline with the venv's samtranslator.  Usage: check-template-cycles.py [template.yaml]
"""
import os
import re
import sys

from cfnlint.decode import decode
from samtranslator.translator.transform import transform

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
path = sys.argv[1] if len(sys.argv) > 1 else "template.yaml"
tpl, errors = decode(path)
if errors:
    sys.exit(f"{path}: {errors}")
# Local CodeUri values are uploaded by `sam build/package`; the transform wants S3.
for res in tpl.get("Resources", {}).values():
    if res.get("Type") == "AWS::Serverless::Function":
        res.setdefault("Properties", {})["CodeUri"] = "s3://bucket/key"


class NoManagedPolicies:
    def load(self):
        return {}

    def get_policy_arn(self, name):
        return f"arn:aws:iam::aws:policy/{name}"


out = transform(tpl, {"AWS::Region": os.environ["AWS_DEFAULT_REGION"]}, NoManagedPolicies())
resources = out["Resources"]


def refs(o, acc):
    if isinstance(o, dict):
        for k, v in o.items():
            if k == "Ref" and isinstance(v, str):
                acc.add(v)
            elif k == "Fn::GetAtt":
                acc.add(v[0] if isinstance(v, list) else v.split(".")[0])
            elif k == "Fn::Sub":
                s = v if isinstance(v, str) else v[0]
                acc.update(m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", s))
                if not isinstance(v, str):
                    refs(v[1], acc)
            else:
                refs(v, acc)
    elif isinstance(o, list):
        for x in o:
            refs(x, acc)


graph = {}
for name, res in resources.items():
    acc = set()
    refs(res.get("Properties", {}), acc)
    deps = res.get("DependsOn", [])
    acc.update([deps] if isinstance(deps, str) else deps)
    graph[name] = {d for d in acc if d in resources}

state = {}


def visit(node, path):
    state[node] = "open"
    for nxt in sorted(graph[node]):
        if state.get(nxt) == "open":
            return path + [node, nxt]
        if nxt not in state:
            cycle = visit(nxt, path + [node])
            if cycle:
                return cycle
    state[node] = "done"
    return None


for n in sorted(graph):
    if n not in state:
        cycle = visit(n, [])
        if cycle:
            sys.exit("circular dependency: " + " -> ".join(cycle))
print(f"{path}: {len(resources)} resources after the SAM transform, no circular dependency")

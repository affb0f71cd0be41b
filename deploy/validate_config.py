#!/usr/bin/env python3
"""Offline checks of deploy/ that no schema validator does (run by validate.sh).

    python3 deploy/validate_config.py routes|istio|kubernetes|image|envoy [RENDERED]

Each check prints what it found wrong, one line each, and exits 1 if anything
was; 0 otherwise. Needs PyYAML and jsonschema (validate.sh installs them).
`kubernetes` checks RENDERED (the output of `kustomize build deploy/`) when
given, else the raw manifests and kustomization.yaml.

These are keyward-independent: that keyward itself loads routes.toml is a
Rust test.
"""

import pathlib
import re
import sys

import jsonschema
import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent
GRPC_PORT = 50051
HTTP_PORT = 8080

problems = []


def problem(msg):
    problems.append(msg)


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def load_one(path):
    docs = load_all(path)
    if len(docs) != 1:
        raise SystemExit(f"{path}: expected one YAML document, found {len(docs)}")
    return docs[0]


def parse_env(path):
    env = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            problem(f"{path.name}:{n}: not KEY=value")
            continue
        k, v = line.split("=", 1)
        env[k] = v
    return env


# --- routes.toml --------------------------------------------------------------

RESOURCES = {"account", "project", "sandbox", "domain"}
LEVELS = {"viewer", "admin"}
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
ROUTE_KEYS = {"methods", "path", "resource", "id", "level", "account", "scope"}
TOP_KEYS = {"unmatched", "strip_credential", "routes"}
PARAM = re.compile(r"^\{([a-z_][a-z0-9_]*)\}$")
LITERAL = re.compile(r"^[A-Za-z0-9._~:@!$&'()+,;=-]+$")


def check_routes():
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        print("routes: Python < 3.11 has no tomllib; skipped")
        return
    path = DEPLOY / "routes.toml"
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        problem(f"routes.toml: not TOML: {e}")
        return
    for k in sorted(set(doc) - TOP_KEYS):
        problem(f"routes.toml: unknown top-level key {k!r}")
    if doc.get("unmatched", "deny") not in ("deny", "allow"):
        problem("routes.toml: unmatched must be \"deny\" or \"allow\"")
    if not isinstance(doc.get("strip_credential", True), bool):
        problem("routes.toml: strip_credential must be a boolean")
    routes = doc.get("routes")
    if not isinstance(routes, list) or not routes:
        problem("routes.toml: no [[routes]]")
        return
    seen = set()
    for i, r in enumerate(routes, 1):
        where = f"routes.toml: route {i} ({r.get('path', '?')})"
        for k in sorted(set(r) - ROUTE_KEYS):
            problem(f"{where}: unknown key {k!r}")
        p = r.get("path")
        if not isinstance(p, str) or not p.startswith("/"):
            problem(f"{where}: path must start with /")
            continue
        segs = p.split("/")[1:]
        params = []
        for j, s in enumerate(segs):
            m = PARAM.match(s)
            if s == "**":
                if j != len(segs) - 1:
                    problem(f"{where}: ** only as the last segment")
            elif m:
                params.append(m.group(1))
            elif not LITERAL.match(s):
                problem(f"{where}: bad segment {s!r}")
        if len(params) != len(set(params)):
            problem(f"{where}: a path parameter appears twice")
        if r.get("resource") not in RESOURCES:
            problem(f"{where}: resource must be one of {sorted(RESOURCES)}")
        if r.get("id") not in params:
            problem(f"{where}: id {r.get('id')!r} is not a parameter of the path")
        if "account" in r and r["account"] not in params:
            problem(f"{where}: account {r['account']!r} is not a parameter of the path")
        if "level" in r and r["level"] not in LEVELS:
            problem(f"{where}: level must be viewer or admin")
        methods = r.get("methods")
        if methods is not None:
            if not isinstance(methods, list) or not methods:
                problem(f"{where}: methods must be a non-empty list")
            else:
                for m in methods:
                    if m not in METHODS:
                        problem(f"{where}: unknown method {m!r}")
                if len(methods) != len(set(methods)):
                    problem(f"{where}: a method appears twice")
        if "scope" in r and (not isinstance(r["scope"], str) or not r["scope"]):
            problem(f"{where}: scope must be a non-empty string")
        key = (tuple(sorted(methods)) if methods else None, p)
        if key in seen:
            problem(f"{where}: same methods and path as an earlier route (never reached)")
        seen.add(key)
    missing = RESOURCES - {r.get("resource") for r in routes}
    if missing:
        problem(f"routes.toml: the example covers no route for {sorted(missing)}")


# --- Istio ----------------------------------------------------------------------

DURATION = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$"}
STRINGS = {"type": "array", "items": {"type": "string"}}

EXT_AUTHZ_GRPC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["service", "port"],
    "properties": {
        "service": {"type": "string"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "timeout": DURATION,
        "failOpen": {"type": "boolean"},
        "clearRouteCache": {"type": "boolean"},
        "statusOnError": {"type": "string"},
        "includeRequestBodyInCheck": {"type": "object"},
    },
}

MESH_CONFIG = {
    "type": "object",
    "required": ["extensionProviders"],
    "properties": {
        "extensionProviders": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "envoyExtAuthzGrpc": EXT_AUTHZ_GRPC,
                },
            },
        }
    },
}

OPERATION = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        k: STRINGS
        for k in ("hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths")
    },
}

AUTHORIZATION_POLICY = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"enum": ["security.istio.io/v1", "security.istio.io/v1beta1"]},
        "kind": {"const": "AuthorizationPolicy"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
                },
                "targetRef": {"type": "object"},
                "targetRefs": {"type": "array"},
                "action": {"enum": ["ALLOW", "DENY", "AUDIT", "CUSTOM"]},
                "provider": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}},
                },
                "rules": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "from": {"type": "array", "items": {"type": "object"}},
                            "to": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {"operation": OPERATION},
                                },
                            },
                            "when": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                },
            },
        },
    },
}


def schema_check(name, doc, schema):
    for e in jsonschema.Draft7Validator(schema).iter_errors(doc):
        loc = "/".join(str(p) for p in e.absolute_path) or "(top)"
        problem(f"{name}: {loc}: {e.message}")


def keyward_services():
    """{name: {port: appProtocol}} of the Services in kubernetes/services.yaml."""
    out = {}
    for d in load_all(DEPLOY / "kubernetes" / "services.yaml"):
        if d.get("kind") == "Service":
            out[d["metadata"]["name"]] = {p["port"]: p.get("appProtocol") for p in d["spec"].get("ports", [])}
    return out


def check_istio():
    op = load_one(DEPLOY / "istio" / "istio-operator.yaml")
    if op.get("kind") != "IstioOperator" or op.get("apiVersion") != "install.istio.io/v1alpha1":
        problem("istio-operator.yaml: not an install.istio.io/v1alpha1 IstioOperator")
    mesh_op = (op.get("spec") or {}).get("meshConfig")
    schema_check("istio-operator.yaml spec.meshConfig", mesh_op, MESH_CONFIG)
    values = load_one(DEPLOY / "istio" / "istiod-values.yaml")
    mesh_helm = values.get("meshConfig")
    schema_check("istiod-values.yaml meshConfig", mesh_helm, MESH_CONFIG)
    if mesh_op != mesh_helm:
        problem("istio-operator.yaml and istiod-values.yaml give different meshConfig")
    policy = load_one(DEPLOY / "istio" / "authorization-policy.yaml")
    schema_check("authorization-policy.yaml", policy, AUTHORIZATION_POLICY)
    if problems:
        return
    spec = policy["spec"]
    if spec.get("action") != "CUSTOM":
        problem("authorization-policy.yaml: action must be CUSTOM (ext_authz)")
    if not spec.get("selector", {}).get("matchLabels"):
        problem("authorization-policy.yaml: no selector: it would apply to every workload of the namespace")
    providers = {p["name"]: p for p in mesh_op["extensionProviders"]}
    name = spec.get("provider", {}).get("name")
    if name not in providers:
        problem(f"authorization-policy.yaml: provider {name!r} is not in the mesh config's extensionProviders")
        return
    grpc = providers[name].get("envoyExtAuthzGrpc")
    if grpc is None:
        problem(f"mesh config: provider {name!r} is not envoyExtAuthzGrpc")
        return
    if grpc.get("failOpen", False) is not False:
        problem("mesh config: failOpen must be false (fail closed when keyward is unavailable)")
    if "includeRequestBodyInCheck" in grpc:
        problem("mesh config: keyward needs no request body (includeRequestBodyInCheck)")
    if "timeout" not in grpc:
        problem("mesh config: set a timeout (Istio's default is 600s)")
    m = re.match(r"^([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local$", grpc["service"])
    services = keyward_services()
    if not m:
        problem(f"mesh config: service {grpc['service']!r} is not <service>.<namespace>.svc.cluster.local")
    elif m.group(1) not in services:
        problem(f"mesh config: service {m.group(1)!r} is not a Service in kubernetes/services.yaml")
    elif services[m.group(1)].get(grpc["port"]) != "grpc":
        problem(f"mesh config: Service {m.group(1)} has no port {grpc['port']} with appProtocol grpc")


# --- Kubernetes -----------------------------------------------------------------


def generated_objects():
    """The objects kustomize would produce, without kustomize (names unhashed)."""
    k = load_one(DEPLOY / "kustomization.yaml")
    objs = []
    for r in k.get("resources", []):
        p = DEPLOY / r
        if not p.is_file():
            problem(f"kustomization.yaml: resource {r} does not exist")
            continue
        objs.extend(load_all(p))
    for g in k.get("configMapGenerator", []):
        data = {}
        for e in g.get("envs", []):
            p = DEPLOY / e
            if not p.is_file():
                problem(f"kustomization.yaml: envs file {e} does not exist")
                continue
            data.update(parse_env(p))
        for f in g.get("files", []):
            key, _, src = f.partition("=")
            src = src or key
            p = (DEPLOY / src).resolve()
            if DEPLOY not in p.parents:
                problem(f"kustomization.yaml: {f} is outside deploy/ (kustomize refuses it)")
            elif not p.is_file():
                problem(f"kustomization.yaml: file {src} does not exist")
            else:
                data[pathlib.PurePath(key).name] = p.read_text(encoding="utf-8")
        objs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": g["name"]}, "data": data})
    return objs


def check_kubernetes(rendered=None):
    objs = load_all(rendered) if rendered else generated_objects()
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    for o in objs:
        if o.get("metadata", {}).get("namespace"):
            problem(f"{o['kind']}/{o['metadata']['name']}: has a namespace (the manifests are namespace-agnostic)")
    sts = by_kind.get("StatefulSet", [])
    if len(sts) != 1:
        problem(f"expected one StatefulSet, found {len(sts)}")
        return
    sts = sts[0]
    spec = sts["spec"]
    if spec.get("replicas") != 1:
        problem("StatefulSet: replicas must be 1 (sled is single-writer)")
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    if any(labels.get(k) != v for k, v in spec["selector"]["matchLabels"].items()):
        problem("StatefulSet: selector does not match the pod's labels")
    configmaps = {o["metadata"]["name"]: o for o in by_kind.get("ConfigMap", [])}
    services = {o["metadata"]["name"]: o for o in by_kind.get("Service", [])}
    if spec.get("serviceName") not in services or services[spec["serviceName"]]["spec"].get("clusterIP") != "None":
        problem(f"StatefulSet: serviceName {spec.get('serviceName')!r} is not a headless Service")
    for name, svc in services.items():
        sel = svc["spec"].get("selector", {})
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            problem(f"Service {name}: selector does not select the keyward pod")
        ports = {p["name"]: p for p in svc["spec"]["ports"]}
        if ports.get("grpc", {}).get("port") != GRPC_PORT or ports["grpc"].get("appProtocol") != "grpc":
            problem(f"Service {name}: needs port grpc {GRPC_PORT} with appProtocol grpc")
        if ports.get("http", {}).get("port") != HTTP_PORT:
            problem(f"Service {name}: needs port http {HTTP_PORT}")
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        problem("StatefulSet: pod securityContext.runAsNonRoot must be true")
    if len(pod["containers"]) != 1:
        problem("StatefulSet: expected one container")
        return
    c = pod["containers"][0]
    csc = c.get("securityContext", {})
    if csc.get("readOnlyRootFilesystem") is not True or csc.get("allowPrivilegeEscalation") is not False:
        problem("container: needs readOnlyRootFilesystem: true and allowPrivilegeEscalation: false")
    res = c.get("resources", {})
    for part in ("requests", "limits"):
        if not {"cpu", "memory"} <= set(res.get(part, {})):
            problem(f"container: resources.{part} needs cpu and memory")
    cports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    if cports != {"grpc": GRPC_PORT, "http": HTTP_PORT}:
        problem(f"container: ports must be grpc {GRPC_PORT} and http {HTTP_PORT}, are {cports}")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        g = c.get(probe, {}).get("grpc")
        if not g or g.get("port") != GRPC_PORT:
            problem(f"container: {probe} must be a grpc probe on port {GRPC_PORT}")
    if c.get("readinessProbe", {}).get("grpc", {}).get("service", "") != "":
        problem('container: readinessProbe must ask service "" (NOT_SERVING until the store is loaded)')
    # The environment, from the ConfigMap(s).
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    for ef in c.get("envFrom", []):
        name = ef.get("configMapRef", {}).get("name")
        if name not in configmaps:
            problem(f"container: envFrom ConfigMap {name!r} does not exist")
        else:
            env.update(configmaps[name].get("data", {}))
    for var, want in (
        ("KEYWARD_GRPC_ADDR", f"0.0.0.0:{GRPC_PORT}"),
        ("KEYWARD_HTTP_ADDR", f"0.0.0.0:{HTTP_PORT}"),
    ):
        if env.get(var) != want:
            problem(f"container: {var} must be {want} (is {env.get(var)!r})")
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    data_dir = env.get("KEYWARD_DATA_DIR")
    if mounts.get(data_dir) not in claims:
        problem(f"container: KEYWARD_DATA_DIR {data_dir!r} is not a volumeClaimTemplate mount")
    routes = env.get("KEYWARD_ROUTES")
    if not routes:
        problem("container: KEYWARD_ROUTES is not set")
    else:
        d, f = routes.rsplit("/", 1)
        vol = vols.get(mounts.get(d))
        cm = (vol or {}).get("configMap", {}).get("name")
        if cm is None:
            problem(f"container: KEYWARD_ROUTES {routes}: {d} is not a ConfigMap mount")
        elif cm not in configmaps:
            problem(f"container: ConfigMap {cm!r} (routes) does not exist")
        elif f not in configmaps[cm].get("data", {}):
            problem(f"ConfigMap {cm}: has no key {f!r} (KEYWARD_ROUTES)")
        elif configmaps[cm]["data"][f] != (DEPLOY / "routes.toml").read_text(encoding="utf-8"):
            problem(f"ConfigMap {cm}: {f} differs from deploy/routes.toml")


# --- Dockerfile -------------------------------------------------------------------


def check_image():
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    # The last stage is the runtime image.
    stages = re.split(r"(?mi)^FROM\s", text)
    runtime = stages[-1]
    joined = re.sub(r"\\\n", " ", runtime)
    expose = set()
    for m in re.finditer(r"(?mi)^EXPOSE\s+(.+)$", joined):
        expose |= {int(p.split("/")[0]) for p in m.group(1).split()}
    if not {GRPC_PORT, HTTP_PORT} <= expose:
        problem(f"Dockerfile: EXPOSE must include {GRPC_PORT} and {HTTP_PORT}")
    users = re.findall(r"(?mi)^USER\s+(\S+)", joined)
    if not users or not re.match(r"^[1-9][0-9]*(:[0-9]+)?$", users[-1]):
        problem("Dockerfile: the runtime stage must end with a numeric non-root USER")
    else:
        sts = next(d for d in load_all(DEPLOY / "kubernetes" / "statefulset.yaml") if d["kind"] == "StatefulSet")
        uid = sts["spec"]["template"]["spec"].get("securityContext", {}).get("runAsUser")
        if uid is not None and str(uid) != users[-1].split(":")[0]:
            problem(f"Dockerfile USER {users[-1]} differs from the StatefulSet's runAsUser {uid}")
    if not re.search(r'(?mi)^VOLUME\s+\[?"?/data"?\]?', joined):
        problem("Dockerfile: VOLUME /data is missing")
    env = dict(re.findall(r"(KEYWARD_[A-Z_]+)=(\S+)", joined))
    for var, want in (
        ("KEYWARD_GRPC_ADDR", f"0.0.0.0:{GRPC_PORT}"),
        ("KEYWARD_HTTP_ADDR", f"0.0.0.0:{HTTP_PORT}"),
        ("KEYWARD_DATA_DIR", "/data"),
    ):
        if env.get(var) != want:
            problem(f"Dockerfile: ENV {var} must be {want}")
    if "--bin keyward" not in text or "--locked" not in text:
        problem("Dockerfile: must build with cargo build --release --locked --bin keyward")
    # The context is the repo root: keep the big dirs out, the sources in.
    ignore = DEPLOY / "Dockerfile.dockerignore"
    if not ignore.is_file():
        problem("Dockerfile.dockerignore is missing (the context would include target/ and .git/)")
        return
    patterns = {
        line.strip().rstrip("/")
        for line in ignore.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }
    for big in ("target", ".git"):
        if big not in patterns:
            problem(f"Dockerfile.dockerignore: {big}/ must be excluded")
    for needed in ("Cargo.toml", "Cargo.lock", "build.rs", "src", "proto", "openapi", "*", "**"):
        if needed in patterns:
            problem(f"Dockerfile.dockerignore: {needed} is needed by the build")


# --- envoy.yaml (written with the ext_authz code; checked here if present) ------


def walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def check_envoy():
    path = DEPLOY / "envoy" / "envoy.yaml"
    if not path.is_file():
        print("envoy: deploy/envoy/envoy.yaml does not exist yet; skipped")
        return
    doc = load_one(path)
    filters = [
        n for n in walk(doc) if n.get("name") in ("envoy.filters.http.ext_authz", "ext_authz") and "typed_config" in n
    ]
    if len(filters) < 1:
        problem("envoy.yaml: no envoy.filters.http.ext_authz filter")
        return
    for f in filters:
        tc = f["typed_config"]
        if tc.get("failure_mode_allow", False) is not False:
            problem("envoy.yaml: ext_authz failure_mode_allow must be false")
        if "with_request_body" in tc:
            problem("envoy.yaml: ext_authz with_request_body must be off (absent)")
        gs = tc.get("grpc_service")
        if not gs:
            problem("envoy.yaml: ext_authz must use grpc_service (keyward's gRPC port)")
            continue
        if gs.get("timeout") is None:
            problem("envoy.yaml: ext_authz grpc_service needs a timeout")
        if tc.get("transport_api_version", "V3") != "V3":
            problem("envoy.yaml: ext_authz transport_api_version must be V3")
        cluster = gs.get("envoy_grpc", {}).get("cluster_name")
        clusters = [n for n in walk(doc) if n.get("name") == cluster and ("load_assignment" in n or "hosts" in n)]
        if cluster and not clusters:
            problem(f"envoy.yaml: ext_authz cluster {cluster!r} is not defined")
        for cl in clusters:
            text = yaml.safe_dump(cl)
            if "http2_protocol_options" not in text:
                problem(f"envoy.yaml: cluster {cluster} must speak HTTP/2 (gRPC)")
            ports = {n["port_value"] for n in walk(cl) if "port_value" in n}
            if ports != {GRPC_PORT}:
                problem(f"envoy.yaml: cluster {cluster} must point at keyward's gRPC port {GRPC_PORT} (has {ports})")


CHECKS = {
    "routes": check_routes,
    "istio": check_istio,
    "kubernetes": check_kubernetes,
    "image": check_image,
    "envoy": check_envoy,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in CHECKS:
        raise SystemExit(f"usage: {sys.argv[0]} {'|'.join(CHECKS)} [RENDERED]")
    try:
        CHECKS[sys.argv[1]](*sys.argv[2:])
    except (KeyError, TypeError, AttributeError, StopIteration, yaml.YAMLError) as e:
        problem(f"unexpected structure: {type(e).__name__}: {e}")
    for p in problems:
        print(p)
    sys.exit(1 if problems else 0)

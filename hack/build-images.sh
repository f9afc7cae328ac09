#!/usr/bin/env bash
# Builds the container images of this project and of the parts its end-to-end tests run,
# all on this machine, without an image registry (docs/images.md):
#
#   image                              ref (stable; `--list` prints them)
#   master-controller-manager          mla-controllers/master-controller-manager:$IMAGE_TAG
#   seed-controller-manager            mla-controllers/seed-controller-manager:$IMAGE_TAG
#   user-cluster-controller-manager    mla-controllers/user-cluster-controller-manager:$IMAGE_TAG
#   nginx       (the gateway)          mla-parts/nginx:$DEBIAN_SUITE          (bookworm)
#   prometheus  (the metrics agent)    mla-parts/prometheus:v3.<minor>.<patch> (from $PROMETHEUS_VERSION)
#   cortex                             mla-parts/cortex:$CORTEX_VERSION
#   oauth2-proxy (the IAP)             mla-parts/oauth2-proxy:$OAUTH2_PROXY_VERSION
#   mock-oidc   (test OIDC provider)   mla-parts/mock-oidc:$MOCKOIDC_VERSION
#   pause       (pod sandbox)          mla-parts/pause:$PAUSE_VERSION          (1)
#
#   hack/build-images.sh [image ...]   # all images by default; on stdout one
#                                      # "<image> <ref>" line per image built
#   hack/build-images.sh --list [image ...]   # the same lines, building nothing
#
# The three binaries are built statically (glibc, crt-static) for x86_64-unknown-linux-gnu
# with cargo and copied into `FROM scratch` images by the workspace's Dockerfile. The Go
# parts come from hack/build-real-parts.sh (cached by version) on an empty image with a
# CA bundle, passwd and group files. nginx runs on a root file system assembled from
# Debian's packages (cached by suite and recipe). pause is hack/images/pause.c, built with
# gcc -static. No image holds a compiler, a package manager or a shell, except nginx,
# whose gateway Deployment runs a shell loop (busybox's sh, cat, md5sum, sleep).
#
# Environment: IMAGE_TAG (dev), MLA_TOOLS_CACHE (cache root, $HOME/.cache/mla-controllers),
# CORTEX_VERSION, PROMETHEUS_VERSION, OAUTH2_PROXY_VERSION, MOCKOIDC_VERSION (as
# hack/build-real-parts.sh), CARGO (cargo), CARGO_TARGET_DIR (<workspace>/target).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$PWD"
IMAGE_TAG="${IMAGE_TAG:-dev}"
CARGO="${CARGO:-cargo}"
CACHE_ROOT="${MLA_TOOLS_CACHE:-$HOME/.cache/mla-controllers}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
RUST_TARGET=x86_64-unknown-linux-gnu
# The Debian suite of the machine: nginx's root file system is made from its packages
# with the machine's own apt sources.
DEBIAN_SUITE="$( . /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")"
DEBIAN_SUITE="${DEBIAN_SUITE:-bookworm}"
# The same defaults as hack/build-real-parts.sh, whose cache holds the binaries.
CORTEX_VERSION="${CORTEX_VERSION:-v1.21.1}"
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"
OAUTH2_PROXY_VERSION="${OAUTH2_PROXY_VERSION:-v7.15.6}"
MOCKOIDC_VERSION="${MOCKOIDC_VERSION:-v0.0.0-20261103160011-e06ed0b7cb7f}"
# Bumped when hack/images/pause.c changes.
PAUSE_VERSION=1
export CORTEX_VERSION PROMETHEUS_VERSION OAUTH2_PROXY_VERSION MOCKOIDC_VERSION

BINARIES=(master-controller-manager seed-controller-manager user-cluster-controller-manager)
PARTS=(nginx prometheus cortex oauth2-proxy mock-oidc pause)
STAGE="$TARGET_DIR/images"

log() { printf '[build-images] %s\n' "$*" >&2; }
fail() { printf '[build-images] FAIL: %s\n' "$*" >&2; exit 1; }

# Prometheus 3.x is published as module versions v0.3MM.P: the image carries 3.MM.P.
prometheus_release() {
  local minor="${PROMETHEUS_VERSION#v0.3}"
  minor="${minor%%.*}"
  echo "v3.$((10#$minor)).${PROMETHEUS_VERSION##*.}"
}

ref() {
  case "$1" in
    master-controller-manager | seed-controller-manager | user-cluster-controller-manager)
      echo "mla-controllers/$1:$IMAGE_TAG" ;;
    nginx) echo "mla-parts/nginx:$DEBIAN_SUITE" ;;
    prometheus) echo "mla-parts/prometheus:$(prometheus_release)" ;;
    cortex) echo "mla-parts/cortex:$CORTEX_VERSION" ;;
    oauth2-proxy) echo "mla-parts/oauth2-proxy:$OAUTH2_PROXY_VERSION" ;;
    mock-oidc) echo "mla-parts/mock-oidc:$MOCKOIDC_VERSION" ;;
    pause) echo "mla-parts/pause:$PAUSE_VERSION" ;;
    *) fail "unknown image $1 (${BINARIES[*]} ${PARTS[*]})" ;;
  esac
}

# A hard link where possible (the cache and the workspace usually share a file system),
# else a copy.
link() { ln -f "$1" "$2" 2>/dev/null || cp -f "$1" "$2"; }

# A reproducible tar of directory $1 into $2: the same files give the same bytes, so
# Docker's build cache (keyed by the archive's content) holds across runs. Ownership is
# kept as staged (numeric).
repro_tar() {
  tar -C "$1" --sort=name --mtime=@0 --numeric-owner --format=gnu -cf "$2.tmp" .
  mv "$2.tmp" "$2"
}

docker_build() {
  local dockerfile="$1" context="$2" tag="$3"
  shift 3
  log "docker build $tag"
  # The legacy builder (the docker CLI without buildx) and BuildKit both build these
  # Dockerfiles; neither pulls anything (FROM scratch, no syntax directive).
  # The CLI's notice that the legacy builder is deprecated is noise here: the output is
  # shown only when the build fails.
  local out
  out="$(mktemp)"
  if ! docker build --quiet -f "$dockerfile" -t "$tag" "$@" "$context" >"$out" 2>&1; then
    cat "$out" >&2
    rm -f "$out"
    fail "docker build $tag"
  fi
  rm -f "$out"
}

# --- the three binaries ---------------------------------------------------------------

binaries_built=
build_binaries() {
  [[ -z "$binaries_built" ]] || return 0
  log "cargo build --release --target $RUST_TARGET (static glibc) ${BINARIES[*]}"
  # crt-static links glibc statically; --target keeps RUSTFLAGS off build scripts and
  # proc macros, which must stay dynamic. glibc's own DNS and files lookups are built into
  # libc since 2.34, so name resolution works without libnss_*.so in the image.
  local bins=()
  for b in "${BINARIES[@]}"; do bins+=(--bin "$b"); done
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    "$CARGO" build --release --locked --target "$RUST_TARGET" "${bins[@]}" >&2
  mkdir -p "$STAGE/binaries"
  for b in "${BINARIES[@]}"; do
    local bin="$TARGET_DIR/$RUST_TARGET/release/$b"
    # A dynamically linked binary would start nowhere in a scratch image.
    if LC_ALL=C readelf -l "$bin" 2>/dev/null | grep -q 'program interpreter'; then
      fail "$bin is dynamically linked (it names a program interpreter)"
    fi
    link "$bin" "$STAGE/binaries/$b"
  done
  binaries_built=1
}

build_binary_image() {
  build_binaries
  # The context holds the three binaries: the legacy builder builds every stage of the
  # Dockerfile, not only the one BINARY selects.
  docker_build "$ROOT/Dockerfile" "$STAGE/binaries" "$(ref "$1")" --build-arg "BINARY=$1"
}

# --- Debian packages --------------------------------------------------------------------

# Downloads the .deb files of packages "$@" (versions of the machine's apt sources) into
# the current directory.
apt_download() {
  if ! apt-get download "$@" >/dev/null 2>&1; then
    log "apt-get update (to download $*)"
    apt-get update -qq >/dev/null
    apt-get download "$@" >/dev/null
  fi
}

# Extracts every .deb of the current directory into $1 and lists "package version" lines
# into $1/usr/share/mla-image/packages.
extract_debs() {
  local root="$1" deb
  mkdir -p "$root/usr/share/mla-image"
  for deb in ./*.deb; do
    dpkg-deb -x "$deb" "$root"
    dpkg-deb -W --showformat='${Package} ${Version}\n' "$deb" >>"$root/usr/share/mla-image/packages"
  done
  sort -o "$root/usr/share/mla-image/packages" "$root/usr/share/mla-image/packages"
}

# passwd and group files for the numeric users the images run as (names for tools that
# print them; nothing needs them to start).
write_users() {
  local root="$1"
  mkdir -p "$root/etc"
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nginx:x:101:101:nginx:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
nginx:x:101:
nonroot:x:65532:
nogroup:x:65534:
EOF
  # Files, then DNS (the container runtime writes /etc/hosts and /etc/resolv.conf).
  echo 'hosts: files dns' >"$root/etc/nsswitch.conf"
  mkdir -p "$root/tmp"
  chmod 1777 "$root/tmp"
}

# The common root of the Go parts: CA bundle (Debian's ca-certificates, concatenated as
# update-ca-certificates would), passwd, group, nsswitch.conf, /tmp. Cached by recipe.
go_base_tar() {
  local key
  key="$( (declare -f go_base_tar write_users extract_debs; echo "$DEBIAN_SUITE") | sha256sum | cut -c1-12)"
  local tarball="$CACHE_ROOT/images/go-base-$DEBIAN_SUITE-$key.tar"
  if [[ ! -f "$tarball" ]]; then
    log "assembling the Go parts' base (Debian $DEBIAN_SUITE ca-certificates)"
    local work root
    work="$(mktemp -d)"
    root="$work/root"
    (cd "$work" && apt_download ca-certificates && extract_debs "$root")
    mkdir -p "$root/etc/ssl/certs"
    find "$root/usr/share/ca-certificates" -name '*.crt' | sort | xargs cat >"$root/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$root/usr/share/ca-certificates" "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/sbin" \
      "$root/etc/ca-certificates" "$root/etc/ca-certificates.conf" "$root/usr/share/ca-certificates" \
      "$root/var" "$root/usr/share/debconf" 2>/dev/null || true
    find "$root" -depth -type d -empty -delete
    write_users "$root"
    mkdir -p "$(dirname "$tarball")"
    repro_tar "$root" "$tarball"
    rm -rf "$work"
  fi
  echo "$tarball"
}

# --- nginx ------------------------------------------------------------------------------

# nginx's root file system from Debian's packages: nginx with the libraries it links,
# busybox for the gateway's watcher loop (sh, cat, md5sum, sleep), and a default
# configuration that runs as a non-root user on a read-only root with /tmp writable.
# Cached by suite and recipe (this function's text); the package versions are listed in
# /usr/share/mla-image/packages.
nginx_rootfs() {
  local key
  key="$( (declare -f nginx_rootfs write_users extract_debs; echo "$DEBIAN_SUITE") | sha256sum | cut -c1-12)"
  local tarball="$CACHE_ROOT/images/nginx-rootfs-$DEBIAN_SUITE-$key.tar"
  if [[ ! -f "$tarball" ]]; then
    log "assembling nginx's root file system from Debian $DEBIAN_SUITE packages"
    local work root
    work="$(mktemp -d)"
    root="$work/root"
    # nginx's Depends, less iproute2 (its maintainer scripts use it, nginx does not) and
    # debconf (nginx-common's maintainer scripts).
    (cd "$work" && apt_download nginx nginx-common libc6 libgcc-s1 gcc-12-base libcrypt1 libpcre2-8-0 \
      libssl3 zlib1g busybox-static && extract_debs "$root")
    # Merged /usr, as Debian itself lays it out since bookworm.
    local dir
    for dir in bin sbin lib lib64; do
      if [[ -d "$root/$dir" && ! -L "$root/$dir" ]]; then
        mkdir -p "$root/usr/$dir"
        cp -a "$root/$dir/." "$root/usr/$dir/"
        rm -rf "${root:?}/$dir"
      fi
      mkdir -p "$root/usr/$dir"
      ln -s "usr/$dir" "$root/$dir"
    done
    # busybox's applets as links: the gateway's watcher loop needs sh, cat, md5sum and
    # sleep; the rest helps to look into a running gateway. Not all of them: busybox also
    # has dpkg, rpm and an httpd, which have no place here.
    local applet
    for applet in sh ash cat md5sum sha256sum sleep kill id ls ps echo env printf test [ true false \
      grep sed head tail wc sort cut tr date hostname pwd mkdir rm cp mv ln chmod stat find \
      wget nc nslookup; do
      [[ -e "$root/usr/bin/$applet" || -L "$root/usr/bin/$applet" ]] || ln -s busybox "$root/usr/bin/$applet"
    done
    # What only maintainer scripts, init systems, manuals and iconv use.
    rm -rf "$root/etc/init.d" "$root/etc/logrotate.d" "$root/etc/ufw" "$root/etc/default" \
      "$root/usr/lib/systemd" "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/lintian" \
      "$root/usr/share/bug" "$root/usr/share/apport" "$root/usr/share/vim" "$root/usr/share/locale" \
      "$root/usr/lib/x86_64-linux-gnu/gconv" "$root/etc/nginx/sites-available" "$root/etc/nginx/sites-enabled" \
      "$root/etc/nginx/modules-available" "$root/etc/nginx/modules-enabled" "$root/var/www"
    # Logs to the container's output; pid and temporary files under /tmp (the gateway
    # mounts an emptyDir there; its own nginx.conf names the same places).
    mkdir -p "$root/var/log/nginx" "$root/var/lib/nginx" "$root/run"
    ln -sf /dev/stdout "$root/var/log/nginx/access.log"
    ln -sf /dev/stderr "$root/var/log/nginx/error.log"
    cat >"$root/etc/nginx/nginx.conf" <<'EOF'
# The default of the mla-parts/nginx image: runs as any non-root user on a read-only root
# file system with /tmp writable. The MLA gateway brings its own nginx.conf (ConfigMap).
worker_processes auto;
pid /tmp/nginx.pid;
error_log stderr warn;
events {
    worker_connections 1024;
}
http {
    include /etc/nginx/mime.types;
    access_log /dev/stdout;
    client_body_temp_path /tmp/client_body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    server {
        listen 8080;
        location / {
            return 200 "nginx\n";
        }
    }
}
EOF
    write_users "$root"
    find "$root" -depth -type d -empty ! -path "$root/tmp" ! -path "$root/run" ! -path "$root/var/lib/nginx" -delete
    mkdir -p "$(dirname "$tarball")"
    repro_tar "$root" "$tarball"
    rm -rf "$work"
  fi
  echo "$tarball"
}

build_nginx_image() {
  local ctx="$STAGE/nginx"
  local tarball
  tarball="$(nginx_rootfs)"
  mkdir -p "$ctx"
  link "$tarball" "$ctx/rootfs.tar"
  local version
  version="$(tar -xOf "$ctx/rootfs.tar" ./usr/share/mla-image/packages | awk '$1 == "nginx" {print $2}')"
  docker_build "$ROOT/hack/images/nginx.Dockerfile" "$ctx" "$(ref nginx)" --label "org.opencontainers.image.version=$version"
}

# --- Go parts ---------------------------------------------------------------------------

# Builds the image of Go part $1 (its name in hack/build-real-parts.sh): the base, its
# binaries $2 (comma-separated) under /bin, and the directories $4... owned by uid:gid $3
# (its writable state).
build_go_image() {
  local part="$1" binaries="$2" owner="$3"
  shift 3
  local bin_dir
  bin_dir="$("$ROOT/hack/build-real-parts.sh" "$part" | awk -v p="$part" '$1 == p {print $2}')"
  [[ -d "$bin_dir" ]] || fail "hack/build-real-parts.sh $part gave no bin directory"
  local ctx="$STAGE/$part" root="$STAGE/$part/root"
  rm -rf "$ctx"
  mkdir -p "$root/bin"
  tar -C "$root" -xf "$(go_base_tar)"
  local bin
  for bin in ${binaries//,/ }; do link "$bin_dir/$bin" "$root/bin/$bin"; done
  local dir
  for dir in "$@"; do
    mkdir -p "$root/$dir"
    chown "$owner" "$root/$dir"
  done
  # Part-specific files (e.g. Prometheus' default configuration).
  if [[ -d "$ROOT/hack/images/$part" ]]; then cp -r "$ROOT/hack/images/$part/." "$root/"; fi
  repro_tar "$root" "$ctx/rootfs.tar"
  rm -rf "$root"
  docker_build "$ROOT/hack/images/$part.Dockerfile" "$ctx" "$(ref "$part")"
}

# --- pause ------------------------------------------------------------------------------

build_pause_image() {
  local ctx="$STAGE/pause"
  mkdir -p "$ctx"
  if ! command -v gcc >/dev/null 2>&1 || ! [[ -f /usr/lib/x86_64-linux-gnu/libc.a ]]; then
    log "apt-get install gcc libc6-dev (to build pause statically)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null
  fi
  gcc -Os -static -Wall -Wextra -Werror -o "$ctx/pause.tmp" "$ROOT/hack/images/pause.c"
  strip "$ctx/pause.tmp"
  mv "$ctx/pause.tmp" "$ctx/pause"
  # Deterministic bytes for the build cache: gcc output does not embed times.
  docker_build "$ROOT/hack/images/pause.Dockerfile" "$ctx" "$(ref pause)"
}

# --- main -------------------------------------------------------------------------------

build() {
  case "$1" in
    master-controller-manager | seed-controller-manager | user-cluster-controller-manager) build_binary_image "$1" ;;
    nginx) build_nginx_image ;;
    # Prometheus' upstream image runs as nobody with its state in /prometheus.
    # promtool is left out: the agent does not need it, and it would add 50 MB.
    prometheus) build_go_image prometheus prometheus 65534:65534 prometheus ;;
    # Cortex keeps its blocks, rules and Alertmanager state under /data.
    cortex) build_go_image cortex cortex 65534:65534 data ;;
    oauth2-proxy) build_go_image oauth2-proxy oauth2-proxy 65532:65532 ;;
    mock-oidc) build_go_image mock-oidc mock-oidc 65532:65532 ;;
    pause) build_pause_image ;;
    *) fail "unknown image $1 (${BINARIES[*]} ${PARTS[*]})" ;;
  esac
}

main() {
  local list=
  if [[ "${1:-}" == --list ]]; then list=1; shift; fi
  local images=("$@")
  ((${#images[@]})) || images=("${BINARIES[@]}" "${PARTS[@]}")
  if [[ -n "$list" ]]; then
    for image in "${images[@]}"; do echo "$image $(ref "$image")"; done
    return
  fi
  "$ROOT/hack/install-docker.sh"
  local start=$SECONDS
  for image in "${images[@]}"; do
    ref "$image" >/dev/null
  done
  local sizes=()
  for image in "${images[@]}"; do
    build "$image"
    local size
    size="$(docker image inspect -f '{{.Size}}' "$(ref "$image")")"
    sizes+=("$(printf '%-34s %-62s %6.1f MB' "$image" "$(ref "$image")" "$(awk -v s="$size" 'BEGIN {print s / 1000000}')")")
    echo "$image $(ref "$image")"
  done
  log "built ${#images[@]} images in $((SECONDS - start))s:"
  printf '  %s\n' "${sizes[@]}" >&2
}

main "$@"

# The image of one of the three binaries: the static binary alone in an empty image, run
# as a non-root user (docs/images.md).
#
#   hack/build-images.sh    # (make images) builds the binaries and all three images
#
# By hand: build the static binaries, put them into one directory (the build context),
# and build with BINARY naming the image's binary:
#
#   RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked \
#     --target x86_64-unknown-linux-gnu --bin master-controller-manager \
#     --bin seed-controller-manager --bin user-cluster-controller-manager
#   mkdir -p ctx && cp target/x86_64-unknown-linux-gnu/release/*-controller-manager ctx/
#   docker build --build-arg BINARY=seed-controller-manager \
#     -t registry.example.com/mla-controllers/seed-controller-manager:v0.1.0 -f Dockerfile ctx
#
# Nothing is pulled: no base image (scratch) and no syntax directive, so it builds with
# or without a registry, with BuildKit or the legacy builder. The context must hold all
# three binaries (the legacy builder builds every stage, not only the chosen one).
#
# The binaries link glibc statically (crt-static); its DNS and /etc/hosts lookups are
# built into libc, so names resolve with nothing else in the image. TLS roots for
# external APIs are compiled in (webpki-roots); the Kubernetes CA comes from the
# ServiceAccount or the kubeconfig. 65532 is the conventional "nonroot" user of
# distroless images; the kubelet's runAsNonRoot check needs it numeric.
ARG BINARY=seed-controller-manager

FROM scratch AS master-controller-manager
COPY master-controller-manager /master-controller-manager
ENTRYPOINT ["/master-controller-manager"]

FROM scratch AS seed-controller-manager
COPY seed-controller-manager /seed-controller-manager
ENTRYPOINT ["/seed-controller-manager"]

FROM scratch AS user-cluster-controller-manager
COPY user-cluster-controller-manager /user-cluster-controller-manager
ENTRYPOINT ["/user-cluster-controller-manager"]

FROM ${BINARY}
USER 65532:65532
EXPOSE 8085

# The tests' OIDC provider (hack/mock-oidc), built by hack/build-real-parts.sh.
FROM scratch
ADD rootfs.tar /
USER 65532:65532
ENTRYPOINT ["/bin/mock-oidc"]

# Cortex (single binary, -target=all or one component), built from its Go module by
# hack/build-real-parts.sh; entrypoint /bin/cortex as upstream's image, but as user nobody
# with its state in /data (upstream's runs as root).
FROM scratch
ADD rootfs.tar /
USER 65534:65534
WORKDIR /data
EXPOSE 9009
ENTRYPOINT ["/bin/cortex"]

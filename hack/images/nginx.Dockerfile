# nginx for the MLA gateway, on a root file system assembled from Debian's packages by
# hack/build-images.sh (nginx, the libraries it links, busybox for the gateway's watcher
# loop). Runs as uid 101 on a read-only root with /tmp writable, as the gateway
# Deployment demands. No entrypoint: the gateway Deployment sets its own command.
FROM scratch
ADD rootfs.tar /
USER 101:101
EXPOSE 8080
STOPSIGNAL SIGQUIT
CMD ["/usr/sbin/nginx", "-e", "stderr", "-g", "daemon off;"]

# oauth2-proxy (the per-cluster Alertmanager IAP), built from its Go module by
# hack/build-real-parts.sh; entrypoint /bin/oauth2-proxy as upstream's image, user 65532
# as the IAP Deployment sets.
FROM scratch
ADD rootfs.tar /
USER 65532:65532
EXPOSE 4180
ENTRYPOINT ["/bin/oauth2-proxy"]

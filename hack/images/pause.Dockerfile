# The pod sandbox's process (hack/images/pause.c, static): holds the pod's namespaces,
# exits on SIGTERM or SIGINT, reaps orphaned children. User 65535 as Kubernetes' pause.
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]

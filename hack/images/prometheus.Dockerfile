# Prometheus 3 (the user clusters' metrics agent runs it with --agent), built from its Go
# module by hack/build-real-parts.sh; laid out like the upstream image (entrypoint
# /bin/prometheus, state in /prometheus, user nobody).
FROM scratch
ADD rootfs.tar /
USER 65534:65534
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]

# The `herald` image: one static binary (controller, speaker and the embedded XDP object).
#
#   podman build -t herald .            # or docker build
#
# Stage 1 builds the eBPF object with the pinned nightly and bpf-linker (`cargo xtask build-ebpf`
# installs both), then the musl-static `herald` that embeds it. Stage 2 holds only that binary, so
# the image has no shell, no package manager and nothing to patch. BUILDER can point at a local
# base (e.g. one made with `podman import`) on machines that cannot pull.
ARG BUILDER=docker.io/library/rust:1.99-bookworm

FROM ${BUILDER} AS builder
WORKDIR /src
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools clang \
 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN rustup target add x86_64-unknown-linux-musl \
 && cargo xtask build-ebpf \
 && cargo build --release --locked -p herald --bin herald --target x86_64-unknown-linux-musl \
 && cp target/x86_64-unknown-linux-musl/release/herald /herald

FROM scratch
COPY --from=builder /herald /herald
# Non-root by default; the speaker DaemonSet grants CAP_BPF, CAP_NET_ADMIN and CAP_NET_RAW —
# not privileged (no CAP_PERFMON: the program passes the verifier's unprivileged checks).
USER 65532:65532
ENTRYPOINT ["/herald"]

# ferry's container image: `docker build -t ferry:dev .` at the repository root.
# The entrypoint takes kube-proxy's flags (deploy/base/daemonset.yaml passes --config and
# --hostname-override). Two stages: the build stage compiles the TypeScript and the native
# addon against Debian bookworm's libnftables/libnetfilter_conntrack; the runtime stage is the
# same Debian release with only the shared libraries and the tools ferry runs.

FROM docker.io/library/node:20-bookworm AS build
# pkg-config names in native/binding.gyp: libnftables, libnetfilter_conntrack, libbpf (+ libmnl);
# clang builds the ebpf mode's programs (native/bpf).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential python3 pkg-config libnftables-dev libnetfilter-conntrack-dev libmnl-dev \
      libbpf-dev clang llvm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /ferry
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY tsconfig.json ./
COPY src ./src
COPY test ./test
COPY scripts ./scripts
COPY native ./native
COPY bin ./bin
# node-gyp builds against the image's own Node headers (/usr/local/include/node in the official
# node images) instead of downloading them from nodejs.org: the build needs only npm and Debian.
RUN npx tsc -p tsconfig.json \
 && (cd native && npx --no-install node-gyp rebuild --nodedir=/usr/local --loglevel=error) \
 && make -s -C native/bpf \
 && npm prune --omit=dev --no-audit --no-fund \
 && rm -rf dist/test dist/scripts native/build/Release/obj.target native/build/Release/.deps

FROM docker.io/library/node:20-bookworm-slim AS runtime
# The runtime libraries the addon links against (libnftables1, libnetfilter-conntrack3,
# libmnl0, libbpf1) and the tools ferry and its --cleanup run: nft, iptables(-restore), conntrack, ip.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libnftables1 libnetfilter-conntrack3 libmnl0 libbpf1 nftables iptables conntrack iproute2 kmod \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /ferry
COPY --from=build /ferry/package.json ./package.json
COPY --from=build /ferry/node_modules ./node_modules
COPY --from=build /ferry/dist ./dist
COPY --from=build /ferry/bin ./bin
COPY --from=build /ferry/native/build/Release/ferry_native.node ./native/build/Release/ferry_native.node
# Every BPF object native/bpf/Makefile builds: ebpf mode loads the cgroup and the tc programs.
COPY --from=build /ferry/native/bpf/out ./native/bpf/out
ENTRYPOINT ["node", "--max-semi-space-size=2", "/ferry/bin/ferry"]

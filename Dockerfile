# vipr's node agent image: `kubectl -n kube-system exec ds/vipr -- vipr list -n`.
# Build from the repository root: docker build -t vipr:dev .  (or buildah bud -t vipr:dev .)

# Build stage: the BPF objects (clang) and the TypeScript (tsc), as `make build` does.
FROM node:20-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang-16 llvm-16 libbpf-dev libbpf1 linux-libc-dev make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
# The agent's image: no dev or optional packages (the bench's chart renderer) and no bench or lab
# code; `vipr bench` and `vipr lab` run from a source checkout.
RUN make build \
 && npm prune --omit=dev --omit=optional --no-audit --no-fund \
 && rm -rf dist/src/bench dist/src/lab

# Runtime: Node 20 and the tools each mode drives. libbpf1 is loaded by koffi at run time.
FROM node:20-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libbpf1 iproute2 iptables nftables ipset ipvsadm kmod \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/vipr
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/bpf/*.bpf.o ./bpf/
RUN chmod 0755 dist/src/cli/main.js \
 && ln -s /opt/vipr/dist/src/cli/main.js /usr/local/bin/vipr
ENTRYPOINT ["vipr"]
CMD ["--help"]

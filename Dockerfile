# syntax=docker/dockerfile:1
#
# One Dockerfile for every ATLAS service; the build argument SERVICE picks which one:
#
#   docker build --build-arg SERVICE=api -t atlas-api .
#
# SERVICE is one of: metrics, persistence, scheduler, inference-worker, api.
# The TypeScript is compiled once (stage `compile`, the same for every SERVICE); each image
# runs the service's compiled JavaScript with plain node (no TypeScript loader) and installs
# only the npm dependencies of its own workspace (and of the workspace libraries it links), so
# the api image carries no inference engine (no node-llama-cpp). See docs/deployment.md.
#
# The inference worker's image also compiles llama.cpp with OpenMP in its build stage
# (scripts/build-engine.mjs, docs/adr/0012-engine-builds.md): ENGINE_BUILD=portable (default:
# every x86-64 CPU variant, chosen at load), native (the build machine's CPU only: faster to
# build, but the image then runs only on CPUs like it) or none (node-llama-cpp's prebuilt binary).
# The GPU worker (NVIDIA) is the target `service-cuda`:
#
#   docker build --build-arg SERVICE=inference-worker --target service-cuda -t atlas-inference-worker-cuda .
#
# The entrypoint (deploy/nats/with-nats-password.sh) reads the NATS password from the file
# NATS_PASSWORD_FILE names, when set (compose: the volume nats-init fills, docs/deployment.md).

ARG NODE_IMAGE=node:20-bookworm-slim
# Base of the GPU worker: NVIDIA's CUDA runtime (libcudart, cuBLAS) for node-llama-cpp's prebuilt
# CUDA binary; the host needs the NVIDIA driver and the NVIDIA Container Toolkit.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04

# --- The package manifests alone: the dependency layer below is rebuilt only when they change.
FROM ${NODE_IMAGE} AS manifests
WORKDIR /src
COPY . .
RUN find . -type f ! -name package.json ! -name package-lock.json -delete \
 && find . -depth -type d -empty -delete

# --- `npm run build` of every workspace, once for all services (this stage does not depend on
# SERVICE). Dev dependencies for tsc and the type packages; no optional packages (prebuilt
# binaries of node-llama-cpp, esbuild, biome) and no install scripts: only tsc runs here.
FROM ${NODE_IMAGE} AS compile
WORKDIR /app
COPY --from=manifests /src/ ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --omit=optional --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/ ./scripts/
COPY libs/ ./libs/
COPY services/ ./services/
# A dist/ that came with the build context is dropped: the image gets what these sources compile to.
# /out: every package's dist/ (JavaScript, source maps and copied assets; no declarations).
RUN npm run clean && npm run build \
 && for dir in libs/*/ services/*/; do \
      if [ -d "${dir}dist" ]; then mkdir -p "/out/${dir}" && cp -R "${dir}dist" "/out/${dir}"; fi; \
    done \
 && find /out \( -name '*.d.ts' -o -name '*.d.ts.map' -o -name '*.tsbuildinfo' \) -delete

# --- Dependencies and compiled code of one service.
FROM ${NODE_IMAGE} AS build
ARG SERVICE
ARG ENGINE_BUILD=portable
RUN case "${SERVICE}" in \
      metrics|persistence|scheduler|inference-worker|api) ;; \
      *) echo "Set --build-arg SERVICE=<metrics|persistence|scheduler|inference-worker|api> (got \"${SERVICE}\")" >&2; exit 1 ;; \
    esac \
 && case "${ENGINE_BUILD}" in \
      portable|native|none) ;; \
      *) echo "Set --build-arg ENGINE_BUILD=<portable|native|none> (got \"${ENGINE_BUILD}\")" >&2; exit 1 ;; \
    esac
WORKDIR /app
COPY --from=manifests /src/ ./
# node-llama-cpp ships prebuilt llama.cpp binaries as optional packages; its postinstall step
# (a check that may fall back to compiling llama.cpp) is skipped: the slim image has no compiler.
RUN --mount=type=cache,target=/root/.npm \
    NODE_LLAMA_CPP_SKIP_DOWNLOAD=true \
    npm ci --omit=dev --workspace "services/${SERVICE}" --include-workspace-root=false --no-audit --no-fund
# The worker's llama.cpp with OpenMP, compiled offline from the sources node-llama-cpp ships
# (its git bundle) into node_modules/node-llama-cpp/llama/localBuilds/; the worker loads it
# instead of the prebuilt binary. Compilers live in this stage only. Costs ~10-16 min on 2 cores
# for `native`, more for `portable` (the CPU backend once per x86-64 variant), less with more
# cores; adds the build's binaries (13 MB native) to the image (docs/deployment.md).
COPY scripts/build-engine.mjs ./scripts/build-engine.mjs
RUN if [ "${SERVICE}" = inference-worker ] && [ "${ENGINE_BUILD}" != none ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends cmake g++ make git \
      && rm -rf /var/lib/apt/lists/* \
      && node scripts/build-engine.mjs --clean $([ "${ENGINE_BUILD}" = portable ] && echo --portable); \
    fi \
 && rm -rf scripts
# The compiled code only (package exports resolve to dist/ under plain node); no TypeScript sources.
COPY --from=compile /out/ ./
# This service's V8 options (SERVICE_V8_ARGS in libs/supervisor/src/runtime.ts, as `npm start` uses them).
RUN node --input-type=module -e "const m = await import('./libs/supervisor/dist/runtime.js'); process.stdout.write(m.serviceV8Args(process.argv[1]).join(' '))" "${SERVICE}" > node-args
# Keep only this service and the libraries it links.
RUN for dir in libs/*/; do \
      name="$(node -p "require('./${dir}package.json').name")"; \
      [ -e "node_modules/${name}" ] || rm -rf "${dir}"; \
    done \
 && for dir in services/*/; do [ "${dir}" = "services/${SERVICE}/" ] || rm -rf "${dir}"; done \
 && test -f "services/${SERVICE}/dist/main.js"

# --- The GPU worker's runtime image (NVIDIA): CUDA runtime libraries, Node copied from its image.
FROM ${NODE_IMAGE} AS node
FROM ${CUDA_IMAGE} AS service-cuda
ARG SERVICE
RUN if [ "${SERVICE}" != inference-worker ]; then echo "service-cuda is the inference worker: --build-arg SERVICE=inference-worker" >&2; exit 1; fi
ENV NODE_ENV=production \
    ATLAS_SERVICE=${SERVICE} \
    ATLAS_LOG_FORMAT=json \
    ATLAS_DATA_DIR=/data \
    ATLAS_GPU=cuda
COPY --from=node /usr/local/bin/node /usr/local/bin/node
# libgomp1: the OpenMP runtime of a source build (the CPU part of a partly offloaded model).
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --shell /usr/sbin/nologin node \
 && mkdir -p /data /models && chown node:node /data
WORKDIR /app
COPY --from=build /app/ ./
COPY --chmod=0755 deploy/nats/with-nats-password.sh /usr/local/bin/with-nats-password
USER node
STOPSIGNAL SIGTERM
ENTRYPOINT ["with-nats-password"]
CMD ["sh", "-c", "exec node $(cat node-args) services/${ATLAS_SERVICE}/dist/main.js"]

# --- The runtime image (the last stage: what `docker build` builds without --target).
FROM ${NODE_IMAGE} AS service
ARG SERVICE
ARG ENGINE_BUILD=portable
ENV NODE_ENV=production \
    ATLAS_SERVICE=${SERVICE} \
    ATLAS_LOG_FORMAT=json \
    ATLAS_DATA_DIR=/data
WORKDIR /app
# The worker's source build uses OpenMP: its runtime library (libgomp1) is not in the slim image.
RUN if [ "${SERVICE}" = inference-worker ] && [ "${ENGINE_BUILD}" != none ]; then \
      apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*; \
    fi \
 && mkdir -p /data /models && chown node:node /data
COPY --from=build /app/ ./
COPY --chmod=0755 deploy/nats/with-nats-password.sh /usr/local/bin/with-nats-password
USER node
ENTRYPOINT ["with-nats-password"]
# Each service drains on SIGTERM (runService) within ATLAS_SHUTDOWN_GRACE_MS.
STOPSIGNAL SIGTERM
CMD ["sh", "-c", "exec node $(cat node-args) services/${ATLAS_SERVICE}/dist/main.js"]

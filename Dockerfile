# syntax=docker/dockerfile:1.7
# Multi-stage: build with dev dependencies, run with production ones only, as the unprivileged node user.
# test/docker-image.test.ts builds and starts the production tree by following this file's COPY, RUN, ENV
# and CMD instructions (CI has no Docker engine): keep to those instructions, in exec form where it asks.

FROM node:24-bookworm-slim AS build
WORKDIR /app
# .npmrc: the lock file was made with legacy-peer-deps; `npm ci` and `npm prune` refuse it without.
COPY package.json package-lock.json .npmrc ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY migrations ./migrations
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

FROM node:24-bookworm-slim AS runtime
# SANDBOX=false: the image is for deployments, never a sandbox.
ENV HOST=0.0.0.0 \
    PORT=3000 \
    DATA_DIR=/app/.data \
    SANDBOX=false
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY views ./views
COPY public ./public
# Only used when DATABASE_URL is unset (embedded database); mount a volume here to keep it.
RUN mkdir -p /app/.data && chown node:node /app/.data
USER node
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "dist/src/main.js", "healthcheck"]
# exec form: node is PID 1 and receives SIGTERM itself for a graceful shutdown. --liftoff-only: the embedded
# database's WebAssembly is compiled by V8's baseline tier only, without the 500 MiB its optimising tier
# takes at each start (no effect with DATABASE_URL: nothing else runs WebAssembly).
CMD ["node", "--enable-source-maps", "--max-semi-space-size=16", "--liftoff-only", "dist/src/main.js", "serve"]

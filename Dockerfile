# syntax=docker/dockerfile:1.7
# Multi-stage: build with dev dependencies, run with production ones only, as the unprivileged node user.

FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY migrations ./migrations
RUN npm run build && npm prune --omit=dev

FROM node:24-bookworm-slim AS runtime
ENV HOST=0.0.0.0 \
    PORT=3000 \
    DATA_DIR=/app/.data
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
# exec form: the server is PID 1's child-free process and receives SIGTERM itself for a graceful shutdown.
CMD ["node", "--enable-source-maps", "--max-semi-space-size=4", "dist/src/main.js", "serve"]

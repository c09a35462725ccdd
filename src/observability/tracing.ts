import { context, createContextKey, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Span } from '@opentelemetry/api';

/**
 * OpenTelemetry traces. The code speaks only `@opentelemetry/api`; the SDK and the OTLP exporter are
 * imported, dynamically, by {@link startTracing} when OTEL_EXPORTER_OTLP_ENDPOINT is set. Until then
 * {@link tracingEnabled} is false and nothing installs a span hook at all (the request hook, the oidc-provider
 * middleware wrappers, the query observer): tracing off costs one boolean read per place at start-up.
 *
 * OpenTelemetry's tracer provider and context are process-wide by design, and so is this switch.
 */
let enabled = false;

const TRACER = 'smart-auth-server';
const REQUEST_ID = createContextKey('smart-auth request id');

export function tracingEnabled(): boolean {
  return enabled;
}

export interface Tracing {
  /** Sends the spans still buffered and stops: at shutdown, before the process exits. */
  shutdown(): Promise<void>;
  /** Sends the spans buffered so far (tests). */
  flush(): Promise<void>;
}

/**
 * Registers the SDK: spans of this process, batched, to `${endpoint}/v1/traces` as OTLP/HTTP (JSON), with
 * their context carried across awaits by AsyncLocalStorage.
 */
export async function startTracing(endpoint: string, serviceVersion?: string): Promise<Tracing> {
  const [{ TracerProvider, BatchSpanProcessor }, { OTLPTraceExporter }, { AsyncLocalStorageContextManager }, { resourceFromAttributes }] = await Promise.all([
    import('@opentelemetry/sdk-trace'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/context-async-hooks'),
    import('@opentelemetry/resources'),
  ]);
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ 'service.name': TRACER, ...(serviceVersion ? { 'service.version': serviceVersion } : {}) }),
    spanProcessors: [new BatchSpanProcessor({ exporter: new OTLPTraceExporter({ url: `${endpoint}/v1/traces` }) })],
  });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  trace.setGlobalTracerProvider(provider);
  enabled = true;
  return {
    shutdown: async () => {
      enabled = false;
      await provider.shutdown();
    },
    flush: () => provider.forceFlush(),
  };
}

/** The context of a request: its id rides along, so that every span under it names the request. */
export function withRequestId(parent: Context, requestId: string): Context {
  return parent.setValue(REQUEST_ID, requestId);
}

/** Starts a span under the active one, carrying the request's id. */
export function startSpan(name: string, kind: SpanKind, attributes: Attributes = {}, parent: Context = context.active()): Span {
  const requestId = parent.getValue(REQUEST_ID);
  return trace.getTracer(TRACER).startSpan(name, { kind, attributes: typeof requestId === 'string' ? { ...attributes, 'request.id': requestId } : attributes }, parent);
}

/** Runs `job` inside a span of its own (the active one for whatever it starts), ending it with its outcome. */
export async function inSpan<T>(name: string, kind: SpanKind, attributes: Attributes, job: (span: Span) => Promise<T>): Promise<T> {
  const span = startSpan(name, kind, attributes);
  try {
    return await context.with(trace.setSpan(context.active(), span), () => job(span));
  } catch (error) {
    failSpan(span, error);
    throw error;
  } finally {
    span.end();
  }
}

export function failSpan(span: Span, error: unknown): void {
  span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
}

export { SpanKind };

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { parseAllDocuments } from 'yaml';

import { loadConfig } from '../src/config/config.js';
import { Chart, TemplateError } from './helpers/helm.js';

/**
 * The Helm chart (deploy/helm/smart-auth-server), rendered as `helm template` would and read back as
 * Kubernetes objects: what a cluster would be given, checked field by field.
 */

interface EnvVar {
  readonly name: string;
  readonly value: string;
}
interface Probe {
  readonly httpGet: { readonly path: string; readonly port: string };
}
interface Container {
  readonly name: string;
  readonly image: string;
  readonly args: readonly string[];
  readonly env: readonly EnvVar[];
  readonly envFrom: readonly { readonly secretRef: { readonly name: string } }[];
  readonly ports: readonly { readonly name: string; readonly containerPort: number }[];
  readonly startupProbe?: Probe;
  readonly livenessProbe?: Probe;
  readonly readinessProbe?: Probe;
  readonly lifecycle?: { readonly preStop: { readonly exec: { readonly command: readonly string[] } } };
  readonly securityContext: { readonly readOnlyRootFilesystem: boolean };
}
interface PodSpec {
  readonly terminationGracePeriodSeconds?: number;
  readonly containers: readonly Container[];
  readonly restartPolicy?: string;
}
interface K8sObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: { readonly name: string; readonly labels: Record<string, string>; readonly annotations?: Record<string, string> };
  readonly spec: {
    readonly replicas?: number;
    readonly selector?: Record<string, string> & { readonly matchLabels?: Record<string, string> };
    readonly template?: { readonly metadata: { readonly labels: Record<string, string> }; readonly spec: PodSpec };
    readonly scaleTargetRef?: { readonly kind: string; readonly name: string };
    readonly minReplicas?: number;
    readonly maxReplicas?: number;
    readonly minAvailable?: number;
    readonly ports?: readonly { readonly port: number; readonly targetPort: string }[];
  };
}

const chart = new Chart(join(import.meta.dirname, '..', 'deploy', 'helm', 'smart-auth-server'));

function objects(values: Record<string, unknown> = {}): K8sObject[] {
  const out: K8sObject[] = [];
  for (const [file, text] of chart.render(values)) {
    for (const doc of parseAllDocuments(text)) {
      assert.deepEqual(doc.errors, [], `${file} is not valid YAML:\n${text}`);
      const object = doc.toJS() as K8sObject | null;
      if (object) out.push(object);
    }
  }
  return out;
}
const find = (all: readonly K8sObject[], kind: string): K8sObject | undefined => all.find((o) => o.kind === kind);
const envOf = (container: Container): Record<string, string> => Object.fromEntries(container.env.map((e) => [e.name, e.value]));

describe('Helm chart', () => {
  const all = objects();
  const deployment = find(all, 'Deployment')!;
  const server = deployment.spec.template!.spec.containers[0]!;

  it('renders a Deployment, Service, autoscaler, disruption budget and migration Job, all of the release', () => {
    assert.deepEqual(all.map((o) => `${o.apiVersion} ${o.kind} ${o.metadata.name}`).sort(), [
      'apps/v1 Deployment auth-smart-auth-server',
      'autoscaling/v2 HorizontalPodAutoscaler auth-smart-auth-server',
      'batch/v1 Job auth-smart-auth-server-migrate',
      'policy/v1 PodDisruptionBudget auth-smart-auth-server',
      'v1 Service auth-smart-auth-server',
    ]);
    for (const o of all) assert.equal(o.metadata.labels['app.kubernetes.io/instance'], 'auth');
  });

  it('probes: liveness on /healthz, readiness on /readyz (database and migrations), a startup allowance', () => {
    assert.deepEqual(server.livenessProbe!.httpGet, { path: '/healthz', port: 'http' });
    assert.deepEqual(server.readinessProbe!.httpGet, { path: '/readyz', port: 'http' });
    assert.deepEqual(server.startupProbe!.httpGet, { path: '/healthz', port: 'http' });
    assert.deepEqual(server.ports, [{ name: 'http', containerPort: 3000 }]);
  });

  it('drains: the pre-stop pause and the shutdown timeout fit in the grace period', () => {
    const env = envOf(server);
    const grace = deployment.spec.template!.spec.terminationGracePeriodSeconds!;
    const pause = Number(server.lifecycle!.preStop.exec.command[1]);
    assert.deepEqual(server.lifecycle!.preStop.exec.command, ['sleep', '5']);
    assert.equal(grace, 30);
    assert.ok(pause + Number(env.SHUTDOWN_TIMEOUT_SECONDS) < grace);
    assert.throws(() => chart.render({ terminationGracePeriodSeconds: 20 }), (error: unknown) => error instanceof TemplateError && /must be less than terminationGracePeriodSeconds/.test(error.message));
  });

  it('the environment is one the server accepts, never a sandbox, secrets only from the Secret', () => {
    const env = envOf(server);
    assert.equal(env.SANDBOX, 'false');
    assert.equal(env.SEED_DEMO, 'false');
    assert.deepEqual(server.envFrom, [{ secretRef: { name: 'smart-auth-server' } }]);
    assert.equal(new Set(server.env.map((e) => e.name)).size, server.env.length, 'no variable twice');
    for (const name of Object.keys(env)) assert.doesNotMatch(name, /SECRET|TOKEN|PASSWORD|DATABASE_URL/);
    // What the Secret adds, the server's own validation then accepts the whole environment.
    const config = loadConfig({ ...env, DATABASE_URL: 'postgres://smart@db:5432/smart', SECRET_KEY: 'b'.repeat(64) });
    assert.equal(config.issuer, 'https://auth.example.org');
    assert.equal(config.sandbox, false);
    assert.equal(config.shutdownTimeoutSeconds, 20);
    assert.equal(server.securityContext.readOnlyRootFilesystem, true);
    assert.equal(server.image, 'ghcr.io/smart-auth-server/smart-auth-server:0.1.0');
  });

  it('the Service, disruption budget and autoscaler reach the server pods and not the migration Job', () => {
    const podLabels = deployment.spec.template!.metadata.labels;
    const job = find(all, 'Job')!;
    const matches = (selector: Record<string, string>, labels: Record<string, string>): boolean => Object.entries(selector).every(([k, v]) => labels[k] === v);
    const service = find(all, 'Service')!;
    const pdb = find(all, 'PodDisruptionBudget')!;
    for (const selector of [service.spec.selector!, pdb.spec.selector!.matchLabels!, deployment.spec.selector!.matchLabels!]) {
      assert.ok(matches(selector, podLabels));
      assert.ok(!matches(selector, job.spec.template!.metadata.labels));
    }
    assert.deepEqual(service.spec.ports, [{ name: 'http', port: 80, targetPort: 'http' }]);
    const hpa = find(all, 'HorizontalPodAutoscaler')!;
    assert.deepEqual(hpa.spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: deployment.metadata.name });
    assert.equal(deployment.spec.replicas, undefined, 'the autoscaler owns the replica count');
  });

  it('migrations run in a hook Job before install and upgrade, with the same environment', () => {
    const job = find(all, 'Job')!;
    assert.equal(job.metadata.annotations!['helm.sh/hook'], 'pre-install,pre-upgrade');
    const migrate = job.spec.template!.spec.containers[0]!;
    assert.deepEqual(migrate.args, ['node', 'dist/src/main.js', 'migrate']);
    assert.equal(job.spec.template!.spec.restartPolicy, 'Never');
    assert.deepEqual(migrate.env, server.env);
    assert.deepEqual(migrate.envFrom, server.envFrom);
  });

  it('switches: fixed replicas without autoscaling, metrics on their own port, extra variables, no Job', () => {
    const custom = objects({ autoscaling: { enabled: false }, replicaCount: 3, metrics: { enabled: true }, env: { FHIR_UPSTREAMS: 'https://fhir.example.org/r4=http://hapi:8080/fhir', DATABASE_POOL_MAX: 20 }, migrations: { job: false }, podDisruptionBudget: { enabled: false } });
    assert.deepEqual(custom.map((o) => o.kind).sort(), ['Deployment', 'Service']);
    const d = find(custom, 'Deployment')!;
    const c = d.spec.template!.spec.containers[0]!;
    assert.equal(d.spec.replicas, 3);
    assert.deepEqual(c.ports, [{ name: 'http', containerPort: 3000 }, { name: 'metrics', containerPort: 9464 }]);
    const env = envOf(c);
    assert.equal(env.METRICS_PORT, '9464');
    assert.equal(env.DATABASE_POOL_MAX, '20');
    const config = loadConfig({ ...env, DATABASE_URL: 'postgres://smart@db:5432/smart', SECRET_KEY: 'b'.repeat(64) });
    assert.equal(config.databasePoolMax, 20);
    assert.equal(config.fhirUpstreams[0]?.url, 'http://hapi:8080/fhir');
  });

  it('refuses to render without an issuer or a Secret', () => {
    assert.throws(() => chart.render({ issuer: '' }), /issuer is required/);
    assert.throws(() => chart.render({ existingSecret: '' }), /existingSecret is required/);
  });
});

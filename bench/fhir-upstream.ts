/**
 * The gateway benchmark's upstream: the embedded FHIR server (@medplum/fhir-router, in memory) in a process
 * of its own, with 20 patients of 10 observations each, Amy among them. Prints `ready <url>` when listening.
 * BENCH_UPSTREAM_PORT chooses the port.
 */
import { startFhirServer } from '../src/fhir/server.js';

const CATEGORY = 'http://terminology.hl7.org/CodeSystem/observation-category';
const patients = ['demo-amy-shaw', ...Array.from({ length: 19 }, (_, i) => `bench-patient-${i}`)];
const resources: Record<string, unknown>[] = [];
for (const id of patients) {
  resources.push({ resourceType: 'Patient', id, name: [{ family: id }] });
  for (let n = 0; n < 10; n++) {
    resources.push({
      resourceType: 'Observation',
      id: `${id}-obs-${n}`,
      status: 'final',
      category: [{ coding: [{ system: CATEGORY, code: n % 2 ? 'vital-signs' : 'laboratory' }] }],
      code: { coding: [{ system: 'http://loinc.org', code: n % 2 ? '8867-4' : '2345-7' }] },
      subject: { reference: `Patient/${id}` },
      effectiveDateTime: `2026-11-${String(n + 1).padStart(2, '0')}T08:00:00Z`,
      valueQuantity: { value: 60 + n, unit: 'mg/dL' },
    });
  }
}

const server = await startFhirServer({ port: Number(process.env.BENCH_UPSTREAM_PORT ?? 0) });
await server.fhir.load(resources as never);
process.stdout.write(`ready ${server.url}\n`);
process.on('SIGTERM', () => void server.close().then(() => process.exit(0)));

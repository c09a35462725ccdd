export * from './scope.js';
export * from './algebra.js';
export * from './grant.js';
export * from './consent.js';
export * from './permits.js';
export * from './categories.js';
export { FHIR_R4_RESOURCE_TYPES, isFhirR4ResourceType } from './resource-types.js';

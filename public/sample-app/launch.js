// The sample app's launch page (fhirclient, SMART App Launch 2.2): `iss` (and, from an EHR, `launch`) arrive
// in the query; fhirclient reads the FHIR server's .well-known/smart-configuration and redirects to /auth.
(function () {
  'use strict';
  var params = new URLSearchParams(window.location.search);
  var ehr = params.has('launch');
  // For the sample app's "launch again" link: where this launch started.
  sessionStorage.setItem('sample-app-launch', ehr ? 'ehr' : 'standalone');
  var scope = ehr
    ? 'launch openid fhirUser patient/*.rs user/*.rs offline_access'
    : 'launch/patient launch/encounter openid fhirUser patient/*.rs offline_access';
  window.FHIR.oauth2
    .authorize({ clientId: params.get('client_id') || 'demo-app', scope: params.get('scope') || scope, redirectUri: './' })
    .catch(function (error) {
      document.getElementById('status').textContent = 'The launch failed: ' + error.message;
    });
})();

// The sample app after authorization: fhirclient exchanges the code (PKCE) and holds the token response.
(function () {
  'use strict';
  var show = function (id, text) {
    document.getElementById(id).textContent = text === undefined || text === null ? '—' : String(text);
  };
  window.FHIR.oauth2
    .ready()
    .then(function (client) {
      var token = client.state.tokenResponse || {};
      show('patient', token.patient);
      show('encounter', token.encounter);
      show('user', client.getFhirUser());
      show('scope', token.scope);
      show('refresh', token.refresh_token ? 'yes' : 'no');
      document.getElementById('context').hidden = false;
      document.getElementById('status').textContent = 'Signed in.';
      document.body.setAttribute('data-token-response', JSON.stringify({ patient: token.patient, encounter: token.encounter, scope: token.scope, need_patient_banner: token.need_patient_banner, fhirUser: client.getFhirUser(), refresh: !!token.refresh_token }));
    })
    .catch(function (error) {
      document.getElementById('status').textContent = 'Sign-in failed: ' + error.message;
      document.body.setAttribute('data-error', error.message);
    });
})();

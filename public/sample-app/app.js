// The sample app after authorization: fhirclient exchanges the code (PKCE) and holds the token response;
// the app then reads the patient, vital signs and lab results through the FHIR base with that token, as a
// real app would.
(function () {
  'use strict';
  var $ = function (id) { return document.getElementById(id); };
  var SECRETS = ['access_token', 'refresh_token', 'id_token'];
  // Fills a definition row, or hides it (dt and dd) when it has no value.
  var row = function (id, value) {
    var dd = $(id);
    var empty = value === undefined || value === null || value === '';
    dd.hidden = empty;
    dd.previousElementSibling.hidden = empty;
    var target = dd.firstElementChild || dd;
    target.textContent = empty ? '' : String(value);
  };
  var mask = function (token) {
    var copy = {};
    Object.keys(token).forEach(function (key) {
      var value = token[key];
      copy[key] = SECRETS.indexOf(key) >= 0 && typeof value === 'string' ? value.slice(0, 4) + '… (' + value.length + ' characters, masked)' : value;
    });
    return JSON.stringify(copy, null, 2);
  };
  var humanName = function (patient) {
    var name = (patient.name || [])[0] || {};
    return name.text || [].concat(name.given || []).concat(name.family ? [name.family] : []).join(' ') || patient.id;
  };
  var codeText = function (concept) {
    if (!concept) return '';
    return concept.text || ((concept.coding || [])[0] || {}).display || ((concept.coding || [])[0] || {}).code || '';
  };
  var valueText = function (obs) {
    if (obs.valueQuantity) return obs.valueQuantity.value + ' ' + (obs.valueQuantity.unit || obs.valueQuantity.code || '');
    if (obs.valueCodeableConcept) return codeText(obs.valueCodeableConcept);
    if (obs.valueString !== undefined) return obs.valueString;
    if (obs.component) return obs.component.map(function (c) { return codeText(c.code) + ' ' + (c.valueQuantity ? c.valueQuantity.value + ' ' + (c.valueQuantity.unit || '') : ''); }).join(', ');
    return '';
  };
  var fill = function (tbodyId, sectionId, bundle) {
    var entries = (bundle.entry || []).map(function (e) { return e.resource; }).filter(function (r) { return r && r.resourceType === 'Observation'; });
    var tbody = $(tbodyId);
    entries.forEach(function (obs) {
      var tr = document.createElement('tr');
      tr.setAttribute('data-observation', obs.id);
      [String(obs.effectiveDateTime || obs.issued || '').slice(0, 10), codeText(obs.code), valueText(obs)].forEach(function (text) {
        var td = document.createElement('td');
        td.textContent = text;
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    $(sectionId).hidden = false;
    if (!entries.length) {
      var tr = document.createElement('tr');
      var td = document.createElement('td');
      td.colSpan = 3;
      td.textContent = 'None recorded.';
      tr.appendChild(td);
      tbody.appendChild(tr);
    }
    return entries.map(function (o) { return o.id; });
  };
  var failed = function (message) {
    var p = $('data-status');
    p.hidden = false;
    p.textContent = message;
  };

  window.FHIR.oauth2
    .ready()
    .then(function (client) {
      var token = client.state.tokenResponse || {};
      var iss = client.state.serverUrl;
      // An EHR launch starts again at the launcher; a standalone launch at the app's own launch page.
      $('launch-again').href = sessionStorage.getItem('sample-app-launch') === 'standalone' ? 'launch.html?iss=' + encodeURIComponent(iss) : '../launcher';
      row('patient', token.patient);
      row('encounter', token.encounter);
      row('user', client.getFhirUser());
      row('intent', token.intent);
      row('fhir-context', token.fhirContext ? token.fhirContext.map(function (c) { return c.reference || c.canonical || ''; }).join(', ') : '');
      row('scope', token.scope);
      row('refresh', token.refresh_token ? 'yes' : 'no');
      $('context').hidden = false;
      $('token-response').textContent = mask(token);
      $('token-section').hidden = false;
      $('status').textContent = 'Signed in.';
      var view = { patient: token.patient, encounter: token.encounter, scope: token.scope, need_patient_banner: token.need_patient_banner, fhirUser: client.getFhirUser(), refresh: !!token.refresh_token };
      document.body.setAttribute('data-token-response', JSON.stringify(view));
      if (!token.patient) {
        document.body.setAttribute('data-loaded', JSON.stringify({ vitals: [], labs: [] }));
        return;
      }
      var patientId = encodeURIComponent(token.patient);
      var recent = function (category) { return client.request('Observation?patient=' + patientId + '&category=' + category + '&_sort=-date&_count=10', { flat: false }); };
      return Promise.all([
        client.request('Patient/' + patientId).then(function (patient) {
          $('banner-name').textContent = humanName(patient);
          $('banner-facts').textContent = [patient.gender, patient.birthDate ? 'born ' + patient.birthDate : '', 'id ' + patient.id].filter(Boolean).join(' · ');
          $('banner').hidden = false;
        }),
        recent('vital-signs').then(function (bundle) { return fill('vitals', 'vitals-section', bundle); }),
        recent('laboratory').then(function (bundle) { return fill('labs', 'labs-section', bundle); }),
      ]).then(
        function (results) { document.body.setAttribute('data-loaded', JSON.stringify({ vitals: results[1], labs: results[2] })); },
        function (error) {
          failed('Reading the record failed: ' + error.message);
          document.body.setAttribute('data-fhir-error', error.message);
        },
      );
    })
    .catch(function (error) {
      $('status').textContent = 'Sign-in failed: ' + error.message;
      document.body.setAttribute('data-error', error.message);
    });
})();

// The pipeline editor: checks a spec with the API's own validation, saves a new version.
"use strict";
(function () {
  var M = window.Modelhub;
  var root = document.getElementById("pipeline");
  var form = document.getElementById("pipeline-editor");
  if (!root || !form) { return; }
  var result = document.getElementById("editor-result");
  function show(text, ok) {
    result.textContent = text;
    result.className = ok ? "ok" : "error";
  }
  function spec() {
    try { return JSON.parse(document.getElementById("spec").value); }
    catch (e) { show("The spec is not JSON: " + e.message, false); return null; }
  }
  document.getElementById("check").addEventListener("click", function () {
    var body = spec();
    if (body === null) { return; }
    M.api("POST", "/api/v1/pipelines/validate", { spec: body, team: root.dataset.team || null }).then(function (data) {
      show("OK: steps run as " + data.order.join(" → ") + "; outputs " +
        data.signature.outputs.map(function (o) { return o.name + " " + o.datatype; }).join(", "), true);
    }).catch(function (err) { show(err.message, false); });
  });
  var save = document.getElementById("save");
  if (save) {
    save.addEventListener("click", function () {
      var body = spec();
      if (body === null) { return; }
      var url = "/api/v1/pipelines/" + encodeURIComponent(root.dataset.name) + "/versions/";
      M.api("POST", url, { spec: body, comment: document.getElementById("comment").value }).then(function (data) {
        window.location.href = "?version=" + data.version;
      }).catch(function (err) { show(err.message, false); });
    });
  }
})();

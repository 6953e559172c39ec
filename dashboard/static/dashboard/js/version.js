// A version still validating: poll its API once a second and update the page in place.
"use strict";
(function () {
  var note = document.getElementById("live-note");
  if (!note) { return; }
  var M = window.Modelhub;
  M.pollVersion(note.dataset.poll, function (v) {
    var status = document.getElementById("version-status");
    status.className = "badge " + v.status; status.textContent = v.status; status.dataset.status = v.status;
    M.checklist(v);
    if (v.validation_report && v.validation_report.checks) { M.checksTable(document.getElementById("checks"), v.validation_report); }
    if (v.status === "ready" || v.status === "failed") {
      note.textContent = "Validation finished: " + v.status + ". Reload for the signature and full details.";
      if (v.validation_report && v.validation_report.error) {
        var ul = document.getElementById("report-error"); ul.innerHTML = "";
        ul.appendChild(M.el("li", { "class": "error", role: "alert", text: v.validation_report.error }));
      }
    }
  });
})();

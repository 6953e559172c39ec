// Monitoring charts: fetch the figures (built server-side by dashboard.charts) as JSON and
// draw them with Plotly.react, again every 10 s or when the range or versions change.
"use strict";
(function () {
  var form = document.getElementById("monitor-form");
  if (!form || !window.Plotly) { return; }
  var status = document.getElementById("monitor-status"), timer = null;
  var config = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["select2d", "lasso2d"] };

  function url() {
    var params = new URLSearchParams();
    params.set("range", form.querySelector("#range").value);
    var boxes = form.querySelectorAll("input[name=versions]");
    var picked = Array.prototype.filter.call(boxes, function (b) { return b.checked; }).map(function (b) { return b.value; });
    if (boxes.length && picked.length < boxes.length) { params.set("versions", picked.join(",") || "-"); }
    return form.dataset.url + "?" + params.toString();
  }
  function load() {
    status.textContent = "Loading…";
    window.Modelhub.api("GET", url()).then(function (data) {
      Object.keys(data.figures).forEach(function (key) {
        var node = document.getElementById("chart-" + key);
        if (node) { window.Plotly.react(node, data.figures[key].data, data.figures[key].layout, config); }
      });
      summary(data.summary || []);
      var total = Object.keys(data.requests).reduce(function (s, k) { return s + data.requests[k]; }, 0);
      status.textContent = total + " requests in range · updated " + new Date().toLocaleTimeString();
      status.dataset.requests = String(total);
    }).catch(function (err) { status.textContent = "Could not load the charts: " + err.message; });
  }
  function cell(value, kind) {
    var td = document.createElement("td");
    if (kind !== "text") { td.className = "num"; }
    if (value === null || value === undefined) { td.textContent = "—"; }
    else if (kind === "percent") { td.textContent = (value * 100).toFixed(2) + "%"; }
    else { td.textContent = String(value); }
    return td;
  }
  function summary(rows) {
    var body = document.querySelector("#version-summary tbody");
    if (!body) { return; }
    body.textContent = "";
    if (!rows.length) {
      var tr = document.createElement("tr"), td = cell("No traffic in this range.", "text");
      td.colSpan = 9; td.className = "empty"; tr.appendChild(td); body.appendChild(tr); return;
    }
    rows.forEach(function (r) {
      var tr = document.createElement("tr");
      tr.appendChild(cell(r.version, "text"));
      tr.appendChild(cell(r.requests));
      tr.appendChild(cell(r.error_rate, "percent"));
      ["p50_ms", "p95_ms", "p99_ms", "batch_size", "model_ms", "queue_ms"].forEach(function (k) { tr.appendChild(cell(r[k])); });
      body.appendChild(tr);
    });
  }
  function schedule() {
    if (timer) { clearInterval(timer); timer = null; }
    if (document.getElementById("auto-refresh").checked) { timer = setInterval(load, 10000); }
  }
  form.addEventListener("change", function (e) { if (e.target.id !== "auto-refresh") { load(); } schedule(); });
  document.getElementById("refresh").addEventListener("click", load);
  load();
  schedule();
})();

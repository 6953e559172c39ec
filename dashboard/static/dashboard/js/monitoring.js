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
      var total = Object.keys(data.requests).reduce(function (s, k) { return s + data.requests[k]; }, 0);
      status.textContent = total + " requests in range · updated " + new Date().toLocaleTimeString();
      status.dataset.requests = String(total);
    }).catch(function (err) { status.textContent = "Could not load the charts: " + err.message; });
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

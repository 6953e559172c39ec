// Batch pages: start a job from a version's page (upload through the API), and follow a
// job's progress by polling GET /api/v1/batch-jobs/{id}/ once a second until it ends.
"use strict";
(function () {
  var M = window.Modelhub, el = M.el;

  var form = document.getElementById("batch-start-form");
  if (form) {
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var message = document.getElementById("batch-start-message");
      var data = new FormData(form);
      data.append("model", form.dataset.model);
      data.append("version", form.dataset.version);
      if (!data.get("output_format")) { data.delete("output_format"); }
      document.getElementById("batch-start-button").disabled = true;
      message.textContent = "Uploading…";
      var token = document.querySelector('meta[name="csrf-token"]').content;
      fetch("/api/v1/batch-jobs/", { method: "POST", body: data, credentials: "same-origin",
        headers: { "X-CSRFToken": token, "Accept": "application/json" } })
        .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
        .then(function (res) {
          if (res.ok) { window.location = form.dataset.detailUrl + res.body.id + "/"; return; }
          message.innerHTML = ""; message.appendChild(el("p", { "class": "error", role: "alert", text: M.errorMessage(res.body) }));
          document.getElementById("batch-start-button").disabled = false;
        })
        .catch(function (err) { message.textContent = String(err); document.getElementById("batch-start-button").disabled = false; });
    });
  }

  var head = document.getElementById("batch-job");
  if (!head || head.dataset.terminal) { return; }
  var samples = [];
  function set(id, text) { var node = document.getElementById(id); if (node) { node.textContent = text; } }
  function chart(rate) {
    samples.push(rate); if (samples.length > 60) { samples.shift(); }
    var max = Math.max.apply(null, samples.concat([1]));
    var points = samples.map(function (v, i) { return (i * 300 / 59).toFixed(1) + "," + (58 - v / max * 56).toFixed(1); });
    document.querySelector("#throughput-chart polyline").setAttribute("points", points.join(" "));
  }
  function render(job) {
    var state = document.getElementById("job-state");
    state.textContent = job.state; state.className = "badge " + job.state;
    document.getElementById("job-progress").value = job.progress.fraction;
    set("rows-done", job.rows_done); set("rows-failed", job.rows_failed); set("rows-total", job.rows_total === null ? "?" : job.rows_total);
    set("rows-per-s", job.progress.rows_per_s); set("eta", job.progress.eta_s === null ? "—" : job.progress.eta_s + " s");
    chart(job.progress.rows_per_s);
    if (job.error) { var err = document.getElementById("job-error"); err.textContent = job.error; err.hidden = false; }
    if (job.result) { document.getElementById("result-link").hidden = false; set("result-sha", job.result.sha256); }
    if (job.errors_file) { document.getElementById("errors-link").hidden = false; }
    var tbody = document.getElementById("chunk-rows");
    if (job.chunks && job.chunks.length) {
      tbody.innerHTML = "";
      job.chunks.forEach(function (c) {
        tbody.appendChild(el("tr", {}, [el("td", { "class": "num", text: String(c.index) }), el("td", {}, [M.badge(c.state)]),
          el("td", { "class": "num", text: String(c.row_count) }), el("td", { "class": "num", text: String(c.attempts) }),
          el("td", { "class": "num", text: c.seconds.toFixed(2) })]));
      });
    }
    return ["succeeded", "failed", "cancelled"].indexOf(job.state) >= 0;
  }
  function tick() {
    M.api("GET", head.dataset.api).then(function (job) {
      if (!render(job)) { setTimeout(tick, 1000); }
    }).catch(function () { setTimeout(tick, 3000); });
  }
  tick();
})();

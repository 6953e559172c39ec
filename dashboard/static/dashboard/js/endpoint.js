// The endpoint page: the split editor's running total, the "try it" panel, copy buttons.
// The server (inference.traffic) decides whether a split is allowed; this only helps.
"use strict";
(function () {
  var M = window.Modelhub;
  var form = document.getElementById("split-form");
  if (form) {
    var sum = document.getElementById("split-sum"), save = document.getElementById("split-save");
    var update = function () {
      var total = 0, rows = 0;
      form.querySelectorAll(".split-row").forEach(function (row) {
        var picked = row.querySelector("select").value, role = row.querySelector(".role").value;
        var weight = row.querySelector(".weight");
        weight.disabled = role === "shadow";
        if (role === "shadow") { weight.value = 0; }
        if (picked && role !== "shadow") { total += parseInt(weight.value || "0", 10); rows += 1; }
      });
      var ok = total === 100;
      sum.textContent = "Primary and canary weights add up to " + total + "%" + (ok ? "." : " — they must add up to 100%.");
      sum.className = ok ? "small" : "small error";
      save.disabled = !ok || rows === 0;
    };
    form.addEventListener("input", update);
    form.addEventListener("change", update);
    form.addEventListener("submit", function () {
      form.querySelectorAll(".weight").forEach(function (w) { w.disabled = false; });
    });
    update();
  }
  var tryForm = document.getElementById("try-form");
  if (tryForm) {
    // One request from the panel: to predict (the form's submit) or to explain (the
    // Explain button); an explanation's first instance is drawn as a bar chart.
    var send = function (url, explaining) {
      var status = document.getElementById("try-status"), out = document.getElementById("try-output");
      var chart = document.getElementById("try-attributions");
      var body = document.getElementById("try-body").value, key = document.getElementById("try-key").value.trim();
      try { JSON.parse(body); } catch (err) { status.textContent = "The body is not valid JSON: " + err.message; status.className = "small error"; return; }
      var headers = { "Content-Type": "application/json", "Accept": "application/json" };
      if (key) { headers.Authorization = "Bearer " + key; }
      var started = performance.now();
      status.textContent = explaining ? "Explaining…" : "Sending…"; status.className = "small muted";
      chart.hidden = true;
      fetch(url, { method: "POST", headers: headers, body: body, credentials: "omit" }).then(function (response) {
        return response.text().then(function (text) {
          var ms = (performance.now() - started).toFixed(1), data = null;
          status.textContent = "HTTP " + response.status + " in " + ms + " ms" + (response.headers.get("X-Model-Version") ? " · answered by " + (response.headers.get("X-Model-Name") || "") + " v" + response.headers.get("X-Model-Version") : "");
          status.className = response.ok ? "small" : "small error";
          status.dataset.status = String(response.status);
          try { data = JSON.parse(text); out.textContent = JSON.stringify(data, null, 2); } catch (err) { out.textContent = text; }
          out.hidden = false;
          if (explaining && response.ok && data && data.explanations && data.explanations.length && window.Plotly) {
            drawAttributions(chart, data);
          }
        });
      }).catch(function (err) { status.textContent = "Network error: " + err.message; status.className = "small error"; });
    };
    var drawAttributions = function (node, data) {
      var first = data.explanations[0], names = Object.keys(first.attributions);
      names.sort(function (a, b) { return Math.abs(first.attributions[a]) - Math.abs(first.attributions[b]); });
      var values = names.map(function (n) { return first.attributions[n]; });
      node.hidden = false;
      node.dataset.features = String(names.length);
      window.Plotly.react(node, [{
        type: "bar", orientation: "h", x: values, y: names,
        marker: { color: values.map(function (v) { return v >= 0 ? "#2f7d5a" : "#b3413b"; }) },
        hovertemplate: "%{y}: %{x:.4g}<extra></extra>"
      }], {
        title: { text: data.output + (first.class_index !== null ? " [" + first.class_index + "]" : "") + ": " + first.base_value.toFixed(3) + " → " + first.prediction.toFixed(3), font: { size: 13 } },
        margin: { l: 120, r: 20, t: 36, b: 30 }, xaxis: { zeroline: true, title: { text: "attribution" } }
      }, { displayModeBar: false, responsive: true });
    };
    tryForm.addEventListener("submit", function (e) {
      e.preventDefault();
      send(tryForm.dataset.url, false);
    });
    var explainButton = document.getElementById("try-explain");
    if (explainButton) {
      explainButton.addEventListener("click", function () { send(tryForm.dataset.explainUrl, true); });
    }
  }
  // Deployments warming up: poll the endpoint API until none is loading any more.
  var warmTable = document.querySelector("[data-warmup-poll]");
  if (warmTable) {
    var warmText = function (w) {
      if (!w) { return "loading…"; }
      if (!w.workers) { return "waiting for an inference worker"; }
      return "warming up on " + w.loading + " of " + w.workers + " worker" + (w.workers === 1 ? "" : "s") +
        " / loaded on " + w.loaded + (w.failed ? " / failed on " + w.failed : "");
    };
    var warmTick = function () {
      M.api("GET", warmTable.dataset.warmupPoll).then(function (ep) {
        var loading = 0;
        (ep.deployments || []).forEach(function (d) {
          var cell = warmTable.querySelector('[data-deployment="' + d.id + '"]');
          if (!cell) { return; }
          cell.innerHTML = "";
          cell.appendChild(M.el("span", { "class": "badge " + d.state, title: d.state_detail || "", text: d.state }));
          if (d.state !== "loading") { return; }
          loading += 1;
          var box = M.el("div", { "class": "warmup small", "aria-live": "polite" });
          if (d.warmup) {
            var bar = M.el("progress", { "class": "warmup-progress", max: String(d.warmup.workers || 1) });
            bar.value = d.warmup.loaded; box.appendChild(bar); box.appendChild(document.createTextNode(" "));
          }
          box.appendChild(M.el("span", { "class": "warmup-text", text: warmText(d.warmup) }));
          cell.appendChild(box);
        });
        if (loading) { setTimeout(warmTick, 2000); }
      }).catch(function () { setTimeout(warmTick, 4000); });
    };
    setTimeout(warmTick, 1000);
  }
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var text = document.querySelector(button.dataset.copy).textContent;
      if (navigator.clipboard) { navigator.clipboard.writeText(text).then(function () { button.textContent = "Copied"; }); }
    });
  });
  void M;
})();

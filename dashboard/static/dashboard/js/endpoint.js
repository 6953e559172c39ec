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
    tryForm.addEventListener("submit", function (e) {
      e.preventDefault();
      var status = document.getElementById("try-status"), out = document.getElementById("try-output");
      var body = document.getElementById("try-body").value, key = document.getElementById("try-key").value.trim();
      try { JSON.parse(body); } catch (err) { status.textContent = "The body is not valid JSON: " + err.message; status.className = "small error"; return; }
      var headers = { "Content-Type": "application/json", "Accept": "application/json" };
      if (key) { headers.Authorization = "Bearer " + key; }
      var started = performance.now();
      status.textContent = "Sending…"; status.className = "small muted";
      fetch(tryForm.dataset.url, { method: "POST", headers: headers, body: body, credentials: "omit" }).then(function (response) {
        return response.text().then(function (text) {
          var ms = (performance.now() - started).toFixed(1);
          status.textContent = "HTTP " + response.status + " in " + ms + " ms" + (response.headers.get("X-Model-Version") ? " · answered by " + (response.headers.get("X-Model-Name") || "") + " v" + response.headers.get("X-Model-Version") : "");
          status.className = response.ok ? "small" : "small error";
          status.dataset.status = String(response.status);
          try { out.textContent = JSON.stringify(JSON.parse(text), null, 2); } catch (err) { out.textContent = text; }
          out.hidden = false;
        });
      }).catch(function (err) { status.textContent = "Network error: " + err.message; status.className = "small error"; });
    });
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

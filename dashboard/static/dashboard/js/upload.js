// Upload a version by drag-and-drop (or the file input) with a progress bar, then watch
// it validate. The upload goes to the same API as scripts use, with the session cookie
// and the CSRF header; nothing here decides anything the API does not.
"use strict";
(function () {
  var form = document.getElementById("upload-form");
  if (!form) { return; }
  var M = window.Modelhub, el = M.el;
  var zone = document.getElementById("dropzone"), input = document.getElementById("artifact");
  var chosen = document.getElementById("chosen"), bar = document.getElementById("upload-progress");
  var message = document.getElementById("upload-message"), button = document.getElementById("upload-button");
  var model = form.dataset.model, file = null;

  function choose(f) { file = f; chosen.textContent = f ? "Selected: " + f.name + " (" + Math.round(f.size / 1024) + " KB)" : ""; }
  function size(n) { return n >= 1048576 ? (n / 1048576).toFixed(1) + " MB" : Math.round(n / 1024) + " KB"; }
  function say(text, cls) { message.innerHTML = ""; message.appendChild(el("p", { "class": cls || "", text: text })); }

  zone.addEventListener("click", function (e) { if (e.target !== input) { input.click(); } });
  zone.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  input.addEventListener("change", function () { choose(input.files[0] || null); });
  ["dragenter", "dragover"].forEach(function (type) {
    zone.addEventListener(type, function (e) { e.preventDefault(); zone.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (type) {
    zone.addEventListener(type, function (e) { e.preventDefault(); zone.classList.remove("over"); });
  });
  zone.addEventListener("drop", function (e) { if (e.dataTransfer.files.length) { choose(e.dataTransfer.files[0]); } });

  function addRow(v) {
    var tbody = document.getElementById("version-rows");
    var empty = tbody.querySelector(".empty-row"); if (empty) { empty.remove(); }
    var row = el("tr", { id: "version-row-" + v.version }, [
      el("td", {}, [el("a", { href: form.dataset.versionUrl + v.version + "/" }, [el("strong", { text: "v" + v.version })])]),
      el("td", {}, [M.badge(v.status)]), el("td", { "class": "muted", text: "—" }), el("td", {}),
      el("td", { "class": "num", text: Math.round(v.artifact_size / 1024) + " KB" }), el("td", { text: v.created_by || "" }),
      el("td", { text: "just now" })]);
    tbody.insertBefore(row, tbody.firstChild);
    return row;
  }

  function checklistBlock() {
    var names = (form.dataset.checks || "").split(",").filter(Boolean);
    return el("div", { id: "validation-progress" }, [
      el("p", { "class": "small muted" }, [el("progress", { id: "validation-bar", max: String(names.length), value: "0" }), " ",
        el("span", { id: "validation-count", text: "0 of " + names.length + " checks done" })]),
      el("ol", { "class": "checklist", id: "validation-checklist", "aria-label": "Validation progress" },
        names.map(function (n) { return el("li", { "data-check": n, "data-state": "pending" }, [M.badge("pending"), " " + n]); }))]);
  }

  function watch(v, row) {
    M.pollVersion(v.links.self, function (cur) {
      var cell = row.children[1]; cell.innerHTML = ""; cell.appendChild(M.badge(cur.status));
      message.innerHTML = "";
      var link = el("a", { href: form.dataset.versionUrl + cur.version + "/", text: model + " v" + cur.version });
      var line = el("p", { id: "upload-result", "data-status": cur.status }, [link, " is ", M.badge(cur.status)]);
      message.appendChild(line);
      if (cur.status === "ready") {
        var n = (cur.validation_report.checks || []).length;
        line.appendChild(document.createTextNode(" — all " + n + " checks passed."));
      } else if (cur.status === "failed") {
        line.appendChild(el("span", { "class": "error", text: " — " + (cur.validation_report.error || "validation failed") }));
      } else {
        line.appendChild(document.createTextNode(" — validating…"));
      }
      message.appendChild(checklistBlock());
      M.checklist(cur);
      if (cur.validation_report && cur.validation_report.checks) {
        var tbody = el("tbody");
        M.checksTable(tbody, cur.validation_report);
        message.appendChild(el("table", { "aria-label": "Validation checks" }, [
          el("thead", {}, [el("tr", {}, [el("th", { text: "Check" }), el("th", { text: "Result" }), el("th", { "class": "num", text: "Duration" }), el("th", { text: "Detail" })])]), tbody]));
      }
    });
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    if (!file) { say("Choose or drop an .onnx file first.", "error"); zone.focus(); return; }
    var data = new FormData();
    data.append("artifact", file, file.name);
    var meta = form.querySelector("[name=metadata]").value.trim();
    if (meta) { data.append("metadata", meta); }
    data.append("description", form.querySelector("[name=description]").value);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/models/" + encodeURIComponent(model) + "/versions/");
    xhr.setRequestHeader("X-CSRFToken", M.csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    bar.hidden = false; bar.value = 0; button.disabled = true; say("Uploading " + file.name + "…");
    var sent = document.getElementById("upload-bytes");
    xhr.upload.onprogress = function (ev) {
      if (!ev.lengthComputable) { return; }
      bar.value = Math.round(100 * ev.loaded / ev.total);
      sent.textContent = size(ev.loaded) + " of " + size(ev.total) + " sent (" + bar.value + "%)";
    };
    xhr.onload = function () {
      button.disabled = false;
      var body = null; try { body = JSON.parse(xhr.responseText); } catch (err) { body = null; }
      if (xhr.status === 201) {
        bar.value = 100; sent.textContent = size(file.size) + " of " + size(file.size) + " sent (100%)";
        say("Uploaded as v" + body.version + "; validating…");
        watch(body, addRow(body));
        input.value = ""; choose(null);
      } else {
        bar.hidden = true; sent.textContent = "";
        say("Upload refused: " + M.errorMessage(body) + " (HTTP " + xhr.status + ")", "error");
      }
    };
    xhr.onerror = function () { button.disabled = false; bar.hidden = true; say("The upload failed: network error.", "error"); };
    xhr.send(data);
  });
})();

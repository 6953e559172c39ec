// Shared helpers for the dashboard pages: CSRF-aware JSON calls and small DOM builders.
"use strict";
window.Modelhub = (function () {
  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }
  function api(method, url, body) {
    var opts = { method: method, credentials: "same-origin", headers: { "Accept": "application/json" } };
    if (method !== "GET") { opts.headers["X-CSRFToken"] = csrfToken(); }
    if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
    return fetch(url, opts).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: { message: text.slice(0, 200) } }; }
        if (!response.ok) {
          var message = (data && (data.error && data.error.message || data.detail || data.message)) || ("HTTP " + response.status);
          var err = new Error(message); err.status = response.status; err.data = data; throw err;
        }
        return data;
      });
    });
  }
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") { node.textContent = attrs[k]; } else { node.setAttribute(k, attrs[k]); }
    });
    (children || []).forEach(function (c) { node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }
  function badge(text, cls) { return el("span", { "class": "badge " + (cls || text), text: text }); }
  function errorMessage(data) {
    if (!data) { return "unknown error"; }
    if (data.error && data.error.message) { return data.error.message; }
    return data.detail || data.message || JSON.stringify(data);
  }
  // Poll a version until it is decided (ready or failed), once a second.
  function pollVersion(url, onUpdate) {
    function tick() {
      api("GET", url).then(function (v) {
        onUpdate(v);
        if (v.status !== "ready" && v.status !== "failed") { setTimeout(tick, 1000); }
      }).catch(function () { setTimeout(tick, 2000); });
    }
    tick();
  }
  function checksTable(tbody, report) {
    tbody.innerHTML = "";
    (report.checks || []).forEach(function (c) {
      var ms = typeof c.duration_ms === "number" ? c.duration_ms.toFixed(1) + " ms" : "";
      tbody.appendChild(el("tr", {}, [
        el("td", { text: c.name }), el("td", {}, [badge(c.ok ? "ok" : "fail")]),
        el("td", { "class": "num", text: ms }), el("td", { "class": "small", text: c.detail || "" })]));
    });
  }
  // The ordered validation checklist (dashboard/models/_checklist.html): each check ok,
  // fail, running (when the API reports the check in progress) or pending; ready marks all.
  function checklist(v) {
    var list = document.getElementById("validation-checklist");
    if (!list) { return; }
    var report = v.validation_report || {}, results = {}, done = 0, total = 0;
    (report.checks || []).forEach(function (c) { results[c.name] = c.ok ? "ok" : "fail"; });
    var running = v.validation_progress && v.validation_progress.running;
    list.querySelectorAll("li[data-check]").forEach(function (li) {
      var name = li.dataset.check, state = results[name] || (v.status === "ready" ? "ok" : "pending");
      if (state === "pending" && name === running && v.status === "validating") { state = "running"; }
      total += 1; if (state === "ok" || state === "fail") { done += 1; }
      li.dataset.state = state; li.innerHTML = ""; li.appendChild(badge(state)); li.appendChild(document.createTextNode(" " + name));
    });
    list.dataset.status = v.status;
    var bar = document.getElementById("validation-bar"), count = document.getElementById("validation-count");
    if (bar) { bar.value = done; }
    if (count) { count.textContent = done + " of " + total + " checks done" + (v.status === "ready" || v.status === "failed" ? " — " + v.status : ""); }
    var since = document.getElementById("validation-elapsed");
    if (since && since.dataset.since && v.status !== "ready" && v.status !== "failed") {
      since.textContent = Math.max(0, Math.round((Date.now() - Date.parse(since.dataset.since)) / 1000)) + " s since upload";
    }
  }
  return { checklist: checklist, api: api, csrfToken: csrfToken, el: el, badge: badge, errorMessage: errorMessage, pollVersion: pollVersion, checksTable: checksTable };
})();

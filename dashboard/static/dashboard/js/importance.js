// The version page's global importance: asks the server to explain sampled traffic, then
// draws mean |attribution| per feature as a horizontal bar chart (Plotly, served locally).
"use strict";
(function () {
  var box = document.getElementById("importance");
  if (!box) { return; }
  var button = document.getElementById("importance-compute"), status = document.getElementById("importance-status");
  var chart = document.getElementById("importance-chart");
  button.addEventListener("click", function () {
    status.textContent = "Explaining sampled traffic…"; status.className = "small muted";
    button.disabled = true;
    fetch(box.dataset.url, { credentials: "same-origin", headers: { "Accept": "application/json" } }).then(function (response) {
      return response.json().then(function (data) {
        button.disabled = false;
        status.dataset.status = String(response.status);
        if (!response.ok) { status.textContent = data.error || ("HTTP " + response.status); status.className = "small error"; return; }
        var names = Object.keys(data.importance);
        names.sort(function (a, b) { return data.importance[a] - data.importance[b]; });
        status.textContent = data.rows + " rows of sampled traffic, " + data.model_calls + " model calls (" + data.method + ").";
        status.className = "small";
        if (!window.Plotly) { return; }
        chart.hidden = false;
        window.Plotly.react(chart, [{
          type: "bar", orientation: "h", y: names, x: names.map(function (n) { return data.importance[n]; }),
          hovertemplate: "%{y}: %{x:.4g}<extra></extra>"
        }], { margin: { l: 120, r: 20, t: 10, b: 30 }, xaxis: { title: { text: "mean |attribution|" } } },
        { displayModeBar: false, responsive: true });
      });
    }).catch(function (err) { button.disabled = false; status.textContent = "Network error: " + err.message; status.className = "small error"; });
  });
})();

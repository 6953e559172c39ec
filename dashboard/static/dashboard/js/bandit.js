// The bandit router page: draw the figures the server computed (dashboard.charts.bandit_figures).
(function () {
  "use strict";
  function draw() {
    var source = document.getElementById("bandit-figures");
    if (!source || !window.Plotly) { return; }
    var figures = JSON.parse(source.textContent);
    Object.keys(figures).forEach(function (key) {
      var node = document.getElementById("chart-" + key);
      if (node) { window.Plotly.newPlot(node, figures[key].data, figures[key].layout, { displaylogo: false, responsive: true }); }
    });
    document.body.setAttribute("data-charts-drawn", "1");
  }
  if (document.readyState === "complete") { draw(); } else { window.addEventListener("load", draw); }
})();

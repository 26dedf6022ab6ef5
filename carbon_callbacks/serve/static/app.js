// Draws each chart whose figure the page embeds as JSON: <script type="application/json"
// data-chart="ELEMENT_ID">. The figures are built on the server; nothing is fetched.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var blocks = document.querySelectorAll("script[type='application/json'][data-chart]");
  var drawn = 0;
  blocks.forEach(function (block) {
    var target = document.getElementById(block.dataset.chart);
    if (!target || typeof Plotly === "undefined") { return; }
    var figure = JSON.parse(block.textContent);
    Plotly.newPlot(target, figure.data, figure.layout, {
      displaylogo: false, responsive: true, modeBarButtonsToRemove: ["sendDataToCloud"]
    }).then(function () {
      drawn += 1;
      if (drawn === blocks.length) { document.body.dataset.chartsDrawn = String(drawn); }
    });
  });
  if (blocks.length === 0) { document.body.dataset.chartsDrawn = "0"; }
});

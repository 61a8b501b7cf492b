// The waterfall: every drawn span of the trace, across processes, on one canvas.
// Rows follow the span tree (a child process under the span that started it); only the rows in
// view are drawn, so tens of thousands stay fluid. Wheel: zoom around the pointer; drag: pan;
// click a name: collapse / expand; hover: details with attributes.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var COLORS = {
    process: "#8da0cb", startup: "#fc8d62", "import": "#66c2a5", subprocess: "#e78ac3", http: "#a6d854",
    serialization: "#ffd92f", parse: "#e5c494", phase: "#b3b3b3", container: "#1f78b4", gc: "#7570b3", other: "#c7c7c7",
    aggregate: "#d9d9d9"
  };
  var ROW = 18, AXIS = 26, NAME_WIDTH = 360, INDENT = 12;

  // --- the tree -------------------------------------------------------------------------------
  var nodes = [], byId = new Map();
  data.spans.forEach(function (s) {
    var node = { id: s[0], parent: s[1], name: s[2], cat: s[3], kind: s[4], pid: s[5], start: s[6], dur: s[7],
                 status: s[8], incomplete: s[9], attrs: s[10], children: [], open: s[3] !== "import" };
    nodes.push(node);
    byId.set(node.id, node);
  });
  data.aggregates.forEach(function (a) {
    nodes.push({ id: null, parent: a[0], name: "\u2026 " + a[1] + " more span" + (a[1] === 1 ? "" : "s") + " (" + ms(a[2]) + " in total)",
                 cat: "aggregate", kind: "", pid: null, start: a[3], dur: a[4], status: "", incomplete: false,
                 attrs: { "spans not drawn": a[1], "their total time": ms(a[2]) }, children: [], open: false });
  });
  var roots = [];
  nodes.forEach(function (node) {
    var parent = node.parent ? byId.get(node.parent) : null;
    if (parent) { parent.children.push(node); } else { roots.push(node); }
  });
  var byStart = function (a, b) { return a.start - b.start || b.dur - a.dur; };
  roots.sort(byStart);
  nodes.forEach(function (node) { node.children.sort(byStart); });
  var end = nodes.reduce(function (m, n) { return Math.max(m, n.start + n.dur); }, 1);

  function visibleRows() {
    var rows = [], stack = [];
    for (var i = roots.length - 1; i >= 0; i--) { stack.push([roots[i], 0]); }
    while (stack.length) {
      var item = stack.pop(), node = item[0];
      node.depth = item[1];
      rows.push(node);
      if (node.open) {
        for (var j = node.children.length - 1; j >= 0; j--) { stack.push([node.children[j], item[1] + 1]); }
      }
    }
    return rows;
  }
  var rows = visibleRows();

  // --- drawing ----------------------------------------------------------------------------------
  var scroller = document.getElementById("wf-scroll"), inner = document.getElementById("wf-inner");
  var canvas = document.getElementById("wf-canvas"), ctx = canvas.getContext("2d");
  var tooltip = document.getElementById("tooltip");
  var view = { t0: 0, t1: end };
  var drawn = 0;

  function ms(ns) { return ns >= 1e9 ? (ns / 1e9).toFixed(3) + " s" : (ns / 1e6).toFixed(3) + " ms"; }
  function width() { return canvas.clientWidth; }
  function x(t) { return NAME_WIDTH + (t - view.t0) / (view.t1 - view.t0) * (width() - NAME_WIDTH - 8); }
  function timeAt(px) { return view.t0 + (px - NAME_WIDTH) / (width() - NAME_WIDTH - 8) * (view.t1 - view.t0); }

  function layout() {
    inner.style.height = (AXIS + rows.length * ROW + 4) + "px";
    var ratio = window.devicePixelRatio || 1, w = scroller.clientWidth, h = scroller.clientHeight;
    canvas.style.height = h + "px";
    canvas.width = Math.floor(w * ratio);
    canvas.height = Math.floor(h * ratio);
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    draw();
  }

  function step(span) {  // a round tick interval for the visible time span
    var raw = span / 8, power = Math.pow(10, Math.floor(Math.log10(raw)));
    return [1, 2, 5, 10].map(function (m) { return m * power; }).find(function (s) { return s >= raw; });
  }

  function draw() {
    var w = width(), h = canvas.clientHeight, top = scroller.scrollTop;
    ctx.clearRect(0, 0, w, h);
    ctx.font = "12px -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif";
    ctx.textBaseline = "middle";
    var first = Math.max(0, Math.floor(top / ROW)), last = Math.min(rows.length, first + Math.ceil(h / ROW) + 1);
    drawn = 0;
    for (var i = first; i < last; i++) {
      var node = rows[i], y = AXIS + (i - first) * ROW - (top % ROW);
      if (i % 2) { ctx.fillStyle = "#f8fafc"; ctx.fillRect(0, y, w, ROW); }
      var x0 = Math.max(NAME_WIDTH, x(node.start)), x1 = Math.min(w - 8, x(node.start + node.dur));
      if (x1 >= NAME_WIDTH && x0 <= w - 8) {
        ctx.fillStyle = COLORS[node.cat] || COLORS.other;
        ctx.fillRect(x0, y + 3, Math.max(1, x1 - x0), ROW - 6);
        if (node.status === "ERROR" || node.incomplete) {
          ctx.strokeStyle = node.status === "ERROR" ? "#dc2626" : "#6b7280";
          ctx.strokeRect(x0 + 0.5, y + 3.5, Math.max(1, x1 - x0) - 1, ROW - 7);
        }
        if (x1 - x0 > 60) {
          ctx.fillStyle = "#1d2330";
          ctx.save(); ctx.beginPath(); ctx.rect(x0, y, x1 - x0, ROW); ctx.clip();
          ctx.fillText(ms(node.dur), x0 + 4, y + ROW / 2);
          ctx.restore();
        }
        drawn++;
      }
      ctx.fillStyle = "#ffffff"; ctx.fillRect(0, y, NAME_WIDTH - 4, ROW);
      if (i % 2) { ctx.fillStyle = "#f8fafc"; ctx.fillRect(0, y, NAME_WIDTH - 4, ROW); }
      var indent = 6 + node.depth * INDENT;
      ctx.fillStyle = "#6b7280";
      if (node.children.length) { ctx.fillText(node.open ? "\u25be" : "\u25b8", indent, y + ROW / 2); }
      ctx.fillStyle = node.cat === "process" ? "#1d2330" : "#374151";
      ctx.save(); ctx.beginPath(); ctx.rect(0, y, NAME_WIDTH - 8, ROW); ctx.clip();
      var label = node.cat === "process" ? node.name + " " + (node.attrs["process.command"] || "") + " [" + node.pid + "]" : node.name;
      ctx.fillText(label, indent + 12, y + ROW / 2);
      ctx.restore();
    }
    drawAxis(w);
    document.body.dataset.renderedSpans = String(drawn);
    document.body.dataset.rows = String(rows.length);
  }

  function drawAxis(w) {
    ctx.fillStyle = "#ffffff"; ctx.fillRect(0, 0, w, AXIS);
    ctx.strokeStyle = "#e5e7eb"; ctx.beginPath(); ctx.moveTo(0, AXIS - 0.5); ctx.lineTo(w, AXIS - 0.5); ctx.stroke();
    ctx.fillStyle = "#6b7280";
    ctx.fillText("span (" + rows.length + " rows)", 6, AXIS / 2);
    var s = step(view.t1 - view.t0);
    for (var t = Math.ceil(view.t0 / s) * s; t <= view.t1; t += s) {
      var px = x(t);
      ctx.fillRect(px, AXIS - 6, 1, 6);
      ctx.fillText(ms(t), px + 3, AXIS / 2 - 2);
    }
  }

  // --- interaction --------------------------------------------------------------------------------
  function rowAt(clientY) {
    var rect = canvas.getBoundingClientRect(), y = clientY - rect.top - AXIS;
    if (y < 0) { return null; }
    return rows[Math.floor((y + scroller.scrollTop) / ROW)] || null;
  }

  canvas.addEventListener("wheel", function (event) {
    var rect = canvas.getBoundingClientRect(), px = event.clientX - rect.left;
    if (px < NAME_WIDTH || event.shiftKey) { return; }  // over the names: scroll the rows
    event.preventDefault();
    var at = timeAt(px), factor = Math.exp(event.deltaY * 0.0015);
    var span = Math.max(1000, (view.t1 - view.t0) * factor);
    view.t0 = at - (at - view.t0) * span / (view.t1 - view.t0);
    view.t1 = view.t0 + span;
    draw();
  }, { passive: false });

  var drag = null, moved = false;
  canvas.addEventListener("mousedown", function (event) {
    var rect = canvas.getBoundingClientRect();
    moved = false;
    if (event.clientX - rect.left >= NAME_WIDTH) { drag = { x: event.clientX, t0: view.t0, t1: view.t1 }; }
  });
  window.addEventListener("mouseup", function () { drag = null; });
  canvas.addEventListener("mousemove", function (event) {
    if (drag) {
      moved = moved || Math.abs(event.clientX - drag.x) > 3;
      var shift = (event.clientX - drag.x) / (width() - NAME_WIDTH - 8) * (drag.t1 - drag.t0);
      view.t0 = drag.t0 - shift; view.t1 = drag.t1 - shift;
      draw();
      return;
    }
    showTooltip(rowAt(event.clientY), event);
  });
  canvas.addEventListener("mouseleave", function () { tooltip.style.display = "none"; });
  canvas.addEventListener("click", function (event) {
    var rect = canvas.getBoundingClientRect(), node = rowAt(event.clientY);
    if (node && node.children.length && event.clientX - rect.left < NAME_WIDTH) {
      node.open = !node.open;
      rows = visibleRows();
      layout();
    } else if (node && node.id && !moved && event.clientX - rect.left >= NAME_WIDTH) {
      showHot(node);
    }
  });

  // --- a selected span's hottest frames (run --profile) --------------------------------------------
  function showHot(node) {
    var panel = document.getElementById("hot-frames");
    if (!panel) { return; }
    var frames = (data.hot || {})[node.id];
    var head = "<p><b>" + escape(node.name) + "</b> \u00b7 " + ms(node.dur) + "</p>";
    if (!frames) {
      panel.innerHTML = head + '<p class="about">No samples inside this span.</p>';
    } else {
      panel.innerHTML = head + '<div class="table-wrap"><table><thead><tr><th>function</th><th>file</th>' +
        '<th class="num">self ms</th><th class="num">total ms</th><th class="num">total % of the span</th></tr></thead><tbody>' +
        frames.map(function (f) {
          return "<tr><td>" + escape(f[0]) + "</td><td>" + escape(f[1]) + '</td><td class="num">' + f[2].toFixed(1) +
            '</td><td class="num">' + f[3].toFixed(1) + '</td><td class="num">' + (100 * f[3] * 1e6 / Math.max(node.dur, 1)).toFixed(1) + "</td></tr>";
        }).join("") + "</tbody></table></div>";
    }
    document.body.dataset.hotSpan = node.name;
    document.body.dataset.hotFrames = String(frames ? frames.length : 0);
  }
  scroller.addEventListener("scroll", draw);
  window.addEventListener("resize", layout);

  function escape(text) {
    return String(text).replace(/[&<>"]/g, function (c) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]; });
  }

  function showTooltip(node, event) {
    if (!node) { tooltip.style.display = "none"; return; }
    var html = "<b>" + escape(node.name) + "</b><br>" + escape(node.cat) + (node.kind ? " \u00b7 " + escape(node.kind) : "") +
      (node.pid !== null ? " \u00b7 pid " + escape(node.pid) : "") + "<br>start " + ms(node.start) + " \u00b7 duration " + ms(node.dur) +
      (node.status && node.status !== "UNSET" ? " \u00b7 " + escape(node.status) : "") + (node.incomplete ? " \u00b7 incomplete" : "");
    var keys = Object.keys(node.attrs);
    keys.slice(0, 40).forEach(function (key) {
      var value = node.attrs[key];
      html += '<div class="attr"><span>' + escape(key) + "</span> " + escape(typeof value === "object" ? JSON.stringify(value) : value) + "</div>";
    });
    if (keys.length > 40) { html += '<div class="attr">\u2026 ' + (keys.length - 40) + " more</div>"; }
    tooltip.innerHTML = html;
    tooltip.style.display = "block";
    var left = Math.min(event.clientX + 14, window.innerWidth - tooltip.offsetWidth - 8);
    var top = event.clientY + 14 + tooltip.offsetHeight > window.innerHeight ? event.clientY - tooltip.offsetHeight - 8 : event.clientY + 14;
    tooltip.style.left = left + "px";
    tooltip.style.top = Math.max(4, top) + "px";
  }

  function setAll(open) {
    nodes.forEach(function (node) { node.open = open; });
    rows = visibleRows();
    layout();
  }
  document.getElementById("wf-reset").addEventListener("click", function () { view.t0 = 0; view.t1 = end; draw(); });
  document.getElementById("wf-expand").addEventListener("click", function () { setAll(true); });
  document.getElementById("wf-collapse").addEventListener("click", function () {
    nodes.forEach(function (node) { node.open = node.cat !== "process" && node.cat !== "subprocess" ? false : true; });
    rows = visibleRows();
    layout();
  });
  layout();
})();

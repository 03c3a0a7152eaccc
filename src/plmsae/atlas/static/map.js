// plmsae feature map: draws window.PLMSAE_MAP (integer coordinates 0..grid) on a canvas; hover
// shows a feature's label, click opens its page. A grid of buckets finds the point under the mouse.
(function () {
  "use strict";
  var D = window.PLMSAE_MAP, box = document.getElementById("map-box");
  if (!D || !box) return;
  var canvas = document.getElementById("map"), tip = document.getElementById("map-tip");
  var n = D.f.length, PAD = 12, R = 2.2, CELL = 10;
  var state = {n: n, drawn: 0, px: new Float32Array(n), py: new Float32Array(n), buckets: null, w: 0, h: 0};
  window.plmsaeMap = state;
  function pad5(f) { return ("0000" + f).slice(-5); }
  function draw() {
    var ratio = window.devicePixelRatio || 1, w = box.clientWidth, h = box.clientHeight;
    canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio);
    var g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.fillStyle = "#fff"; g.fillRect(0, 0, w, h);
    var sx = (w - 2 * PAD) / D.grid, sy = (h - 2 * PAD) / D.grid, cols = Math.ceil(w / CELL);
    state.buckets = new Map(); state.w = w; state.h = h; state.drawn = 0;
    // points without a concept first, so coloured ones stay visible on top
    var order = [], none = D.categories.length - 1;
    for (var i = 0; i < n; i++) if (D.c[i] === none) order.push(i);
    for (i = 0; i < n; i++) if (D.c[i] !== none) order.push(i);
    for (var k = 0; k < n; k++) {
      i = order[k];
      var x = PAD + D.x[i] * sx, y = PAD + D.y[i] * sy;
      state.px[i] = x; state.py[i] = y;
      g.fillStyle = D.colours[D.c[i]];
      g.globalAlpha = D.c[i] === none ? 0.55 : 0.85;
      g.beginPath(); g.arc(x, y, R, 0, 2 * Math.PI); g.fill();
      var key = Math.floor(y / CELL) * cols + Math.floor(x / CELL);
      var b = state.buckets.get(key); if (!b) state.buckets.set(key, b = []); b.push(i);
      state.drawn++;
    }
    g.globalAlpha = 1;
    state.cols = cols;
  }
  function pointAt(x, y) {
    var best = -1, bd = 36, cx = Math.floor(x / CELL), cy = Math.floor(y / CELL);
    for (var dy = -1; dy <= 1; dy++) for (var dx = -1; dx <= 1; dx++) {
      var b = state.buckets.get((cy + dy) * state.cols + (cx + dx));
      if (!b) continue;
      for (var j = 0; j < b.length; j++) {
        var i = b[j], d = (state.px[i] - x) * (state.px[i] - x) + (state.py[i] - y) * (state.py[i] - y);
        if (d < bd) { bd = d; best = i; }
      }
    }
    return best;
  }
  state.pointAt = pointAt;
  state.href = function (i) { return D.p[i] ? "features/" + pad5(D.f[i]) + ".html" : null; };
  canvas.addEventListener("mousemove", function (e) {
    var r = canvas.getBoundingClientRect(), x = e.clientX - r.left, y = e.clientY - r.top, i = pointAt(x, y);
    if (i < 0) { tip.style.display = "none"; canvas.style.cursor = "crosshair"; return; }
    var cat = D.categories[D.c[i]];
    tip.textContent = "#" + D.f[i] + (D.l[i] ? " " + D.l[i] : "") + (cat !== "none" ? " (" + cat + ")" : "") + (D.p[i] ? "" : " · no page");
    tip.style.display = "block";
    tip.style.left = Math.min(x + 12, state.w - 200) + "px"; tip.style.top = (y + 12) + "px";
    canvas.style.cursor = D.p[i] ? "pointer" : "default";
  });
  canvas.addEventListener("mouseleave", function () { tip.style.display = "none"; });
  canvas.addEventListener("click", function (e) {
    var r = canvas.getBoundingClientRect(), i = pointAt(e.clientX - r.left, e.clientY - r.top);
    var href = i >= 0 ? state.href(i) : null;
    if (href) window.location.href = href;
  });
  window.addEventListener("resize", draw);
  draw();
})();

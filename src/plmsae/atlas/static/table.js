/* plmsae feature atlas: search, sort and paginate the feature table.
   Data come from assets/atlas-data.js (window.PLMSAE_ATLAS), a script file rather than JSON
   because browsers refuse fetch() of local files under file://. Every value is inserted with
   textContent / setAttribute, never as HTML. State lives in the URL hash so "back" from a
   feature page returns to the same search, sort and page. */
(function () {
  "use strict";
  var data = window.PLMSAE_ATLAS;
  var table = document.getElementById("feature-table");
  if (!data || !table) {
    var err = document.getElementById("load-error");
    if (err) err.hidden = false;
    return;
  }
  var rows = data.rows;
  var tbody = document.getElementById("rows");
  var q = document.getElementById("q");
  var onlyAssoc = document.getElementById("only-assoc");
  var pageSize = document.getElementById("page-size");
  var count = document.getElementById("count");
  var pager = document.getElementById("pager");
  var info = document.getElementById("page-info");
  var prev = document.getElementById("prev");
  var next = document.getElementById("next");
  var headers = table.querySelectorAll("th.sortable");

  // one lower-case search string per row, built once
  var hay = new Array(rows.length);
  for (var i = 0; i < rows.length; i++) {
    var r = rows[i], parts = ["#" + r.feature, String(r.feature), r.label || "", r.description || "",
      r.plain_label || "", r.kind || ""];
    for (var c = 0; c < r.concepts.length; c++) parts.push(r.concepts[c][0], r.concepts[c][1] || "");
    for (var p = 0; p < (r.proteins || []).length; p++) parts.push(r.proteins[p]);
    hay[i] = parts.join(" ").toLowerCase();
  }

  // default order: by evidence (associated and described first; computed by plmsae report)
  var DEFAULT_SORT = "evidence";
  var state = { q: "", assoc: false, sort: DEFAULT_SORT, dir: 1, page: 0, size: 50 };
  var view = [];

  function fmt(x, digits) {
    if (x === null || x === undefined || (typeof x === "number" && isNaN(x))) return "–";
    digits = digits || 3;
    if (x === 0) return "0";
    if (Number.isInteger(x) && Math.abs(x) < 1e9) return x.toLocaleString("en-US");
    if (Math.abs(x) < Math.pow(10, -(digits - 1)) || Math.abs(x) >= 1e6) return x.toExponential(digits - 1);
    return String(Number(x.toPrecision(digits)));
  }
  function pct(x) {
    if (x === null || x === undefined) return "–";
    return (x > 0 && x < 0.001 ? (100 * x).toPrecision(2) : (100 * x).toFixed(1)) + "%";
  }
  function pad(n) { var s = String(n); while (s.length < 5) s = "0" + s; return s; }

  function sortValue(r, key) {
    var v = r[key];
    if (Array.isArray(v)) v = v.join("; ");
    if (typeof v === "string") return v.toLowerCase();
    return v;
  }

  function compute() {
    var terms = state.q.toLowerCase().split(/\s+/).filter(Boolean);
    view = [];
    for (var i = 0; i < rows.length; i++) {
      if (state.assoc && !rows[i].n_associated) continue;
      var ok = true;
      for (var t = 0; t < terms.length && ok; t++) ok = hay[i].indexOf(terms[t]) !== -1;
      if (ok) view.push(i);
    }
    var key = state.sort, dir = state.dir;
    view.sort(function (a, b) {
      var x = sortValue(rows[a], key), y = sortValue(rows[b], key);
      var xn = x === null || x === undefined || x === "", yn = y === null || y === undefined || y === "";
      if (xn || yn) return xn === yn ? rows[a].feature - rows[b].feature : (xn ? 1 : -1); // missing last
      if (x < y) return -dir;
      if (x > y) return dir;
      return rows[a].feature - rows[b].feature;
    });
  }

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function render() {
    var size = state.size, pages = Math.max(1, Math.ceil(view.length / size));
    if (state.page >= pages) state.page = pages - 1;
    if (state.page < 0) state.page = 0;
    var start = state.page * size, end = Math.min(view.length, start + size);
    var frag = document.createDocumentFragment();
    for (var k = start; k < end; k++) {
      var r = rows[view[k]], tr = document.createElement("tr");
      var td = cell(tr, "", "n");
      if (r.page) {
        var a = document.createElement("a");
        a.href = "features/" + pad(r.feature) + ".html";
        a.textContent = "#" + r.feature;
        td.appendChild(a);
      } else {
        td.textContent = "#" + r.feature;
        td.title = "no page written for this feature";
      }
      var ev = [];
      if (r.n_associated) ev.push(r.n_associated + (r.n_associated === 1 ? " concept" : " concepts"));
      if (r.description) ev.push("described");
      cell(tr, ev.length ? ev.join(" · ") : "–", "evidence");
      var lt = cell(tr, "", "desc");
      var head = document.createElement("div");
      head.className = "lbl";
      head.textContent = r.label || "";
      if (r.kind && r.kind !== "specific") {
        var b = document.createElement("span");
        b.className = "badge kind";
        b.textContent = r.kind;
        head.appendChild(document.createTextNode(" "));
        head.appendChild(b);
      }
      lt.appendChild(head);
      var more = r.description || (r.plain_label && r.plain_label !== r.label ? r.plain_label : "");
      if (more) {
        var d = document.createElement("div");
        d.className = "more";
        d.textContent = more;
        lt.appendChild(d);
      }
      var ct = cell(tr, "", "concepts");
      for (var c = 0; c < r.concepts.length; c++) {
        var cc = r.concepts[c], s = document.createElement("div");
        s.title = cc[0] + (cc[2] ? " (" + cc[2] + ")" : "");
        s.appendChild(document.createTextNode((cc[1] || cc[0]) + " "));
        var qs = document.createElement("span");
        qs.className = "q";  // never broken inside ("q = 3.4e-\n47")
        qs.textContent = cc[2] === "residue" ? "F1 = " + fmt(cc[4]) : "q = " + fmt(cc[3]);
        s.appendChild(qs);
        ct.appendChild(s);
      }
      var pt = cell(tr, "", "proteins");
      for (var p = 0; p < (r.proteins || []).length; p++) {
        var pd = document.createElement("div");
        pd.textContent = r.proteins[p];
        pt.appendChild(pd);
      }
      cell(tr, pct(r.density), "n");
      cell(tr, fmt(r.simulation), "n");
      frag.appendChild(tr);
    }
    if (end === start) {
      var tr0 = document.createElement("tr"), td0 = cell(tr0, "No feature matches.", "feat-table-empty");
      td0.colSpan = 7;
      frag.appendChild(tr0);
    }
    tbody.textContent = "";
    tbody.appendChild(frag);
    count.textContent = view.length.toLocaleString("en-US") + " of " + rows.length.toLocaleString("en-US") + " features";
    info.textContent = "page " + (state.page + 1) + " of " + pages +
      (view.length ? " (rows " + (start + 1) + "–" + end + ")" : "");
    prev.disabled = state.page === 0;
    next.disabled = state.page >= pages - 1;
    for (var h = 0; h < headers.length; h++) {
      var th = headers[h];
      th.setAttribute("aria-sort", th.getAttribute("data-key") === state.sort ? (state.dir > 0 ? "ascending" : "descending") : "none");
    }
    saveHash();
  }

  function saveHash() {
    var p = new URLSearchParams();
    if (state.q) p.set("q", state.q);
    if (state.assoc) p.set("assoc", "1");
    if (state.sort !== DEFAULT_SORT || state.dir !== 1) p.set("sort", (state.dir < 0 ? "-" : "") + state.sort);
    if (state.page) p.set("page", String(state.page + 1));
    if (state.size !== 50) p.set("size", String(state.size));
    var h = p.toString();
    var current = location.hash.replace(/^#/, "");
    // the default state keeps whatever plain anchor is there (#features), so that loading the
    // page does not jump to an anchor the reader did not ask for
    if (h === current || (!h && current.indexOf("=") === -1)) return;
    var url = h ? "#" + h : location.pathname + location.search + "#features";
    try { history.replaceState(null, "", url); } catch (e) { /* some browsers refuse it under file:// */ }
  }

  function loadHash() {
    var h = location.hash.replace(/^#/, "");
    if (!h || h === "features") return;
    var p = new URLSearchParams(h);
    state.q = p.get("q") || "";
    state.assoc = p.get("assoc") === "1";
    var s = p.get("sort");
    if (s) { state.dir = s.charAt(0) === "-" ? -1 : 1; state.sort = s.replace(/^-/, ""); }
    var keys = Array.prototype.map.call(headers, function (th) { return th.getAttribute("data-key"); });
    if (keys.indexOf(state.sort) === -1) { state.sort = DEFAULT_SORT; state.dir = 1; }
    state.page = Math.max(0, (parseInt(p.get("page"), 10) || 1) - 1);
    var size = parseInt(p.get("size"), 10);
    if ([25, 50, 100, 250].indexOf(size) !== -1) state.size = size;
  }

  var timer = null;
  q.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(function () { state.q = q.value.trim(); state.page = 0; compute(); render(); }, 120);
  });
  onlyAssoc.addEventListener("change", function () { state.assoc = onlyAssoc.checked; state.page = 0; compute(); render(); });
  pageSize.addEventListener("change", function () { state.size = parseInt(pageSize.value, 10) || 50; state.page = 0; render(); });
  prev.addEventListener("click", function () { state.page--; render(); });
  next.addEventListener("click", function () { state.page++; render(); });
  for (var h = 0; h < headers.length; h++) {
    headers[h].addEventListener("click", function (ev) {
      var key = ev.currentTarget.getAttribute("data-key");
      if (state.sort === key) state.dir = -state.dir;
      else { state.sort = key; state.dir = (key === "label" || key === "proteins" || key === "feature" || key === "best_q" || key === "evidence") ? 1 : -1; }
      state.page = 0;
      compute();
      render();
    });
    headers[h].tabIndex = 0;
    headers[h].addEventListener("keydown", function (ev) { if (ev.key === "Enter") ev.currentTarget.click(); });
  }

  loadHash();
  q.value = state.q;
  onlyAssoc.checked = state.assoc;
  pageSize.value = String(state.size);
  table.hidden = false;
  pager.hidden = false;
  compute();
  render();
})();

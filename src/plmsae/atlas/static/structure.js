// plmsae structure view: paints a feature's per-residue activation on a structure (3Dmol.js).
// Data: <script type="application/json" id="structure-data"> {views: [{key, label, values, max,
// note, mismatch}]}; structures: window.PLMSAE_STRUCTURES[key] (PDB text, residues numbered
// 1..n, loaded from structures/<key>.js). No request leaves the page.
(function () {
  "use strict";
  var LOW = [242, 242, 242], HIGH = [200, 30, 30], NONE = 0x9aa5b1;
  function colour(v, max) {
    if (v === null || v === undefined) return NONE;
    var t = max > 0 ? Math.min(1, Math.max(0, v / max)) : 0, c = [0, 0, 0];
    for (var i = 0; i < 3; i++) c[i] = Math.round(LOW[i] + (HIGH[i] - LOW[i]) * t);
    return (c[0] << 16) | (c[1] << 8) | c[2];
  }
  function start(box) {
    var data = JSON.parse(document.getElementById(box.dataset.source).textContent);
    var note = box.parentNode.querySelector(".structure-note");
    var buttons = box.parentNode.querySelectorAll("button[data-view]");
    var viewer = $3Dmol.createViewer(box, {backgroundColor: "white", antialias: true});
    var state = {viewer: viewer, data: data, colour: colour, shown: -1};
    function show(i) {
      var v = data.views[i], pdb = (window.PLMSAE_STRUCTURES || {})[v.key];
      viewer.removeAllModels();
      viewer.removeAllLabels();
      if (!pdb) { note.textContent = "The structure file of " + v.key + " was not found."; return; }
      var model = viewer.addModel(pdb, "pdb");
      model.setColorByFunction({}, function (a) { return colour(v.values[a.resi - 1], v.max); });
      viewer.setStyle({}, {cartoon: {colorfunc: function (a) { return colour(v.values[a.resi - 1], v.max); }}});
      viewer.setHoverable({}, true, function (a) {
        if (a.hoverLabel) return;
        var val = v.values[a.resi - 1];
        a.hoverLabel = viewer.addLabel(a.resn + " " + a.resi + (val === null ? " (not in the sequence)" : ": " + val.toFixed(2)),
          {position: a, backgroundColor: "black", fontColor: "white", fontSize: 12});
      }, function (a) { if (a.hoverLabel) { viewer.removeLabel(a.hoverLabel); delete a.hoverLabel; } });
      viewer.zoomTo();
      viewer.render();
      state.shown = i;
      note.textContent = v.note;
      note.classList.toggle("warn", !!v.mismatch);
      for (var b = 0; b < buttons.length; b++) buttons[b].setAttribute("aria-pressed", String(+buttons[b].dataset.view === i));
      box.dataset.shown = v.key;
    }
    for (var b = 0; b < buttons.length; b++)
      buttons[b].addEventListener("click", function (e) { show(+e.currentTarget.dataset.view); });
    state.show = show;
    show(0);
    (window.plmsaeStructures = window.plmsaeStructures || []).push(state);
  }
  function init() {
    var boxes = document.querySelectorAll(".structure-viewer[data-source]");
    for (var i = 0; i < boxes.length; i++) {
      try { start(boxes[i]); } catch (e) {
        boxes[i].parentNode.querySelector(".structure-note").textContent = "The structure could not be drawn: " + e;
        throw e;
      }
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
